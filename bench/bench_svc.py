"""Benchmarks of svc against the real stack, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_svc.py [--events 10000] [--repeat 3] [--prefetch 100] [--done-ids 100000]

- consume: a bare pika consume-and-ack loop, then ``python -m svc`` without and with etcd
  deduplication, each draining the same number of events from the same queue setup
  (goals: svc without dedup >= 0.8x the bare loop, with dedup >= 0.5x);
- publish: ``svc.Publisher`` with pipelined confirms, events/s (goal >= 5,000);
- startup: from spawning ``python -m svc`` with ENABLE_ETCD=true to consuming, with 100,000 done
  ids of that service in etcd (goal <= 1.5 s).

Everything runs under its own exchange and etcd prefix, removed at the end.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pika  # noqa: E402

from svc import _etcd, effects, keys  # noqa: E402
from svc.config import DEFAULT_PREFETCH  # noqa: E402
from svc.testing import World, wait_for  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ETCD_ENDPOINT = "127.0.0.1:2379"
EVENT = {"type": "new_order", "id": "bench", "args": {"sku": "talk-tshirt", "qty": 1}}


def fill(world: World, service: str, events: int) -> None:
    result = world.publisher(service).publish(EVENT, count=events, fresh_ids=True)
    assert result.ok, result
    wait_for(lambda: world.depth(service) == events, f"{events} events in the queue", timeout=60)


def bare_pika(world: World, service: str, events: int, prefetch: int) -> float:
    """Events/s of the simplest correct consumer: manual ack per event, same prefetch."""
    fill(world, service, events)
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    acked = []

    def on_message(ch, method, properties, body):
        ch.basic_ack(method.delivery_tag)
        acked.append(time.time())
        if len(acked) == events:
            ch.stop_consuming()

    channel.basic_consume(world.queue(service), on_message)
    channel.start_consuming()
    connection.close()
    return (events - 1) / (acked[-1] - acked[0])


def svc_rate(world: World, service: str, events: int, enable_etcd: bool, prefetch: int) -> float:
    """Events/s of ``python -m svc`` draining a full queue, from the times in its effect records
    (so waiting for the end costs etcd nothing: the poll is slow and counts only)."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING")
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=300, interval=0.5)
    assert process.stop() == 0
    times = sorted(record["at"] for record in effects.records(world.etcd, service, prefix=world.prefix))
    assert len(times) == events, len(times)
    return (events - 1) / (times[-1] - times[0])


def publish_rate(world: World, service: str, events: int) -> float:
    publisher = world.publisher(service)
    publisher.publish(EVENT)  # declares the topology first, outside the timing
    started = time.perf_counter()
    result = publisher.publish(EVENT, count=events, fresh_ids=True)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return events / elapsed


def startup(world: World, service: str, done_ids: int) -> tuple[float, str]:
    """Seconds from spawning the service to its consumer on the queue, with ``done_ids`` in etcd."""
    lease = world.etcd.grant(3600)
    base = keys.dedup_prefix(world.prefix, service)
    value = f"done {'0' * 32}".encode()
    for start in range(0, done_ids, 128):
        request = _etcd.new_txn()
        for i in range(start, min(start + 128, done_ids)):
            _etcd.add_put(request.success, f"{base}{keys.encode_id(f'done-{i}')}".encode(), value, lease)
        world.etcd.txn(request)
    started = time.perf_counter()
    [process] = world.start(service, enable_etcd=True, log_level="INFO")
    elapsed = time.perf_counter() - started
    line = next((line for line in process.log().splitlines() if "imported" in line), "")
    process.stop()
    world.etcd.revoke(lease)
    return elapsed, line.split(": ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; medians are printed")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="for both consumers")
    parser.add_argument("--done-ids", type=int, default=100000)
    parser.add_argument("--etcd", default=ETCD_ENDPOINT, help="etcd endpoint (default: the stack's)")
    args = parser.parse_args()
    runs = {name: [] for name in ("bare", "plain", "dedup", "publish")}
    with tempfile.TemporaryDirectory() as logs:
        world = World(AMQP_URL, args.etcd, Path(logs))
        try:
            # Rounds interleave the contenders, so a busy moment of the machine hits all of them.
            for _ in range(args.repeat):
                runs["bare"].append(bare_pika(world, world.service_name("bare"), args.events, args.prefetch))
                runs["plain"].append(svc_rate(world, world.service_name("plain"), args.events, False, args.prefetch))
                runs["dedup"].append(svc_rate(world, world.service_name("dedup"), args.events, True, args.prefetch))
                runs["publish"].append(publish_rate(world, world.service_name("pub"), args.events))
            seconds, imported = startup(world, world.service_name("start"), args.done_ids)
        finally:
            world.close()
    bare, plain, dedup, published = (statistics.median(runs[name]) for name in ("bare", "plain", "dedup", "publish"))
    each = {name: " ".join(f"{rate:.0f}" for rate in rates) for name, rates in runs.items()}
    print(f"{args.events} events per run, prefetch {args.prefetch}, median of {args.repeat} interleaved rounds")
    print(f"{'bare pika consume+ack':32} {bare:9.0f} events/s   1.00x                 [{each['bare']}]")
    print(f"{'svc, dedup off':32} {plain:9.0f} events/s   {plain / bare:.2f}x  (goal >= 0.80x)  [{each['plain']}]")
    print(f"{'svc, etcd dedup':32} {dedup:9.0f} events/s   {dedup / bare:.2f}x  (goal >= 0.50x)  [{each['dedup']}]")
    print(f"{'svc.Publisher, confirms':32} {published:9.0f} events/s          (goal >= 5000)  [{each['publish']}]")
    print(f"{'start to consuming, ' + str(args.done_ids) + ' done':32} {seconds:9.2f} s                 (goal <= 1.5 s)")
    print(f"  service log: {imported}")


if __name__ == "__main__":
    main()
