"""Benchmarks of svc against the real stack, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_svc.py [--events 20000] [--repeat 5] [--prefetch 100] [--done-ids 100000]
                                        [--sibling-events 5000]

- consume: a bare pika consume-and-ack loop, then ``python -m svc`` without and with etcd
  deduplication, each draining the same number of events from the same queue setup
  (goals: svc without dedup >= 0.8x the bare loop, with dedup >= 0.5x);
- publish: ``svc.Publisher`` with pipelined confirms, events/s (goal >= 5,000);
- dead sibling (issue 8 case D): a replica with CRASH_AT=claimed claims a window of a full queue and
  dies; the survivor's rate on the other events while those claims live, as a ratio of its healthy
  rate (the same service draining the same number of events alone, in the same round; goal >= 0.8);
- startup: from spawning ``python -m svc`` with ENABLE_ETCD=true to consuming, with 100,000 done
  ids of that service in etcd (goal <= 1.5 s), once per round.

Each round runs every contender once, on a fresh queue deleted after its run; the medians are
printed with every round's figure, so the spread of a noisy machine shows. Everything runs under
its own exchange and etcd prefix, removed at the end.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from svc import _etcd, effects, keys, topology  # noqa: E402
from svc.config import DEFAULT_PREFETCH  # noqa: E402
from svc.testing import World, wait_for  # noqa: E402

from nirvana.cost import bare_pika  # noqa: E402  (the yardstick chapter 8 measures too)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ETCD_ENDPOINT = "127.0.0.1:2379"
EVENT = {"type": "new_order", "id": "bench", "args": {"sku": "talk-tshirt", "qty": 1}}


def retire(world: World, service: str) -> None:
    """Delete a measured service's queue and etcd keys: every queue of the world is bound to the
    one exchange with ``#``, so a queue left behind would receive (and slow) every later fill."""
    world.channel().queue_delete(world.queue(service))
    world.services.discard(service)
    for base in (keys.dedup_prefix(world.prefix, service), keys.effects_prefix(world.prefix, service)):
        world.etcd.delete_prefix(base)


def fill(world: World, service: str, events: int) -> None:
    result = world.publisher(service).publish(EVENT, count=events, fresh_ids=True)
    assert result.ok, result
    wait_for(lambda: world.depth(service) == events, f"{events} events in the queue", timeout=60)


def svc_rate(world: World, service: str, events: int, enable_etcd: bool, prefetch: int) -> float:
    """Events/s of ``python -m svc`` draining a full queue, from the times in its effect records
    (so the service's start and the wait for the end are not timed)."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING")
    # The queue's depth costs etcd nothing; the effects are counted only once it is drained.
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    assert process.stop() == 0
    times = sorted(record["at"] for record in effects.records(world.etcd, service, prefix=world.prefix))
    assert len(times) == events, len(times)
    return (events - 1) / (times[-1] - times[0])


def sibling_rate(world: World, service: str, events: int, prefetch: int) -> float:
    """Events/s of ``python -m svc`` on a full queue after a sibling claimed a window and died,
    counted over the events that sibling did not claim, all processed while its claims lived."""
    claim_ttl = 60  # the dead claims outlive the measurement; the survivor is stopped before they end
    fill(world, service, events)
    [dead] = world.start(service, enable_etcd=True, prefetch=prefetch, claim_ttl=claim_ttl, crash_at="claimed",
                         log_level="WARNING", wait=False)
    assert dead.popen.wait(30) == -9, dead.log()
    base = keys.dedup_prefix(world.prefix, service)
    claimed = {keys.decode_id(key[len(base):].decode()) for page in world.etcd.scan_prefix(base)
               for key, value in page if value.startswith(b"claimed ")}
    [process] = world.start(service, enable_etcd=True, prefetch=prefetch, claim_ttl=claim_ttl, log_level="WARNING")
    others = events - len(claimed)
    wait_for(lambda: world.effects(service) >= others, f"the {others} unclaimed events", timeout=claim_ttl / 2,
             interval=0.2)
    assert process.stop() == 0
    records = effects.records(world.etcd, service, prefix=world.prefix)
    assert len(records) == others and not claimed & {record["id"] for record in records}, "a dead claim ended"
    times = sorted(record["at"] for record in records)
    return (others - 1) / (times[-1] - times[0])


def publish_rate(world: World, service: str, events: int) -> float:
    publisher = world.publisher(service)
    publisher.publish(EVENT)  # declares the topology first, outside the timing
    started = time.perf_counter()
    result = publisher.publish(EVENT, count=events, fresh_ids=True)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return events / elapsed


def add_done_ids(world: World, service: str, done_ids: int) -> int:
    """Put ``done_ids`` done marks of ``service`` in etcd, on a lease (returned) that ends them."""
    lease = world.etcd.grant(3600)
    base = keys.dedup_prefix(world.prefix, service)
    value = f"done {'0' * 32}".encode()
    for start in range(0, done_ids, 128):
        request = _etcd.new_txn()
        for i in range(start, min(start + 128, done_ids)):
            _etcd.add_put(request.success, f"{base}{keys.encode_id(f'done-{i}')}".encode(), value, lease)
        world.etcd.txn(request)
    return lease


def startup(world: World, service: str) -> tuple[float, str]:
    """Seconds from spawning the service to its consumer on the queue; its "imported" log line."""
    # Its queue lives only while it is measured: left bound, it would collect every other run's events.
    topology.declare(world.channel(), world.exchange, services=(service,))
    started = time.perf_counter()
    [process] = world.start(service, enable_etcd=True, log_level="INFO")
    elapsed = time.perf_counter() - started
    line = next((line for line in process.log().splitlines() if "imported" in line), "")
    assert process.stop() == 0
    world.channel().queue_delete(world.queue(service))
    return elapsed, line.split(": ", 1)[-1]


def spread(rates: list[float], fmt: str = "{:.0f}") -> str:
    return f"[{' '.join(fmt.format(rate) for rate in rates)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds, interleaved; medians are printed")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="for both consumers")
    parser.add_argument("--done-ids", type=int, default=100000)
    parser.add_argument("--sibling-events", type=int, default=5000, help="events of the dead-sibling runs")
    parser.add_argument("--etcd", default=ETCD_ENDPOINT, help="etcd endpoint (default: the stack's)")
    args = parser.parse_args()
    runs = {name: [] for name in ("bare", "plain", "dedup", "publish", "healthy", "sibling", "start")}
    with tempfile.TemporaryDirectory() as logs:
        world = World(AMQP_URL, args.etcd, Path(logs))
        try:
            starter = world.service_name("start")
            world.channel().queue_delete(world.queue(starter))  # see startup
            lease = add_done_ids(world, starter, args.done_ids)
            contenders = {
                "bare": lambda service: bare_pika(world, service, args.events, args.prefetch),
                "plain": lambda service: svc_rate(world, service, args.events, False, args.prefetch),
                "dedup": lambda service: svc_rate(world, service, args.events, True, args.prefetch),
                "publish": lambda service: publish_rate(world, service, args.events),
                "healthy": lambda service: svc_rate(world, service, args.sibling_events, True, args.prefetch),
                "sibling": lambda service: sibling_rate(world, service, args.sibling_events, args.prefetch),
            }
            # Rounds interleave the contenders, so a busy moment of the machine hits all of them;
            # each measured queue is deleted after its run (see retire).
            for _ in range(args.repeat):
                for name, measure in contenders.items():
                    service = world.service_name(name)
                    runs[name].append(measure(service))
                    retire(world, service)
                seconds, imported = startup(world, starter)
                runs["start"].append(seconds)
            world.etcd.revoke(lease)
        finally:
            world.close()
    bare, published, seconds = (statistics.median(runs[name]) for name in ("bare", "publish", "start"))
    ratios = {name: [rate / base for rate, base in zip(runs[name], runs["bare"], strict=True)] for name in ("plain", "dedup")}
    print(f"{args.events} events per run, prefetch {args.prefetch}, median of {args.repeat} interleaved rounds "
          "[each round; for ratios, each round against its own bare run]")
    print(f"{'bare pika consume+ack':32} {bare:9.0f} events/s   1.00x                   {spread(runs['bare'])}")
    for name, label, goal in (("plain", "svc, dedup off", 0.8), ("dedup", "svc, etcd dedup", 0.5)):
        rate = statistics.median(runs[name])
        print(f"{label:32} {rate:9.0f} events/s   {rate / bare:.2f}x  (goal >= {goal:.2f}x)  {spread(runs[name])} "
              f"{spread(ratios[name], '{:.2f}x')}")
    held = [rate / base for rate, base in zip(runs["sibling"], runs["healthy"], strict=True)]
    label = "svc, a dead sibling's claims"
    print(f"{label:32} {statistics.median(runs['sibling']):9.0f} events/s   "
          f"{statistics.median(held):.2f}x of its healthy {statistics.median(runs['healthy']):.0f} events/s "
          f"(goal >= 0.80x, {args.sibling_events} events)  {spread(runs['sibling'])} {spread(held, '{:.2f}x')}")
    print(f"{'svc.Publisher, confirms':32} {published:9.0f} events/s            (goal >= 5000)  {spread(runs['publish'])}")
    print(f"{'start to consuming, ' + str(args.done_ids) + ' done':32} {seconds:9.2f} s                   "
          f"(goal <= 1.5 s) {spread(runs['start'], '{:.2f}')}")
    print(f"  service log (last round): {imported}")


if __name__ == "__main__":
    main()
