"""Benchmarks of svc against the real stack, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_svc.py [--events 20000] [--repeat 5] [--prefetch 1000] [--done-ids 100000]
                                        [--sibling-events 5000] [--amqp-url URL] [--etcd HOST:PORT]

- consume: a bare pika consume-and-ack loop, then ``python -m svc`` without and with etcd
  deduplication, each draining the same number of events from the same queue setup
  (goals: svc without dedup >= 0.8x the bare loop, with dedup >= 0.5x);
- publish: a bare pika publisher with pipelined confirms (nirvana.cost.bare_pika_publish), then
  ``svc.Publisher`` (goal >= 0.9x of the bare one);
- dead sibling (issue 8 case D): a replica with CRASH_AT=claimed claims a window of a full queue and
  dies; the survivor's rate on the other events while those claims live, as a ratio of its healthy
  rate (the same service draining the same number of events alone, in the same round; goal >= 0.8);
- startup: from spawning ``python -m svc`` with ENABLE_ETCD=true to consuming, with 100,000 done
  ids of that service in etcd (goal <= 1.5 s), once per round.

Each round runs every contender once, on a fresh queue deleted after its run, in an order that
rotates from round to round (so no contender always runs first, or right after the same one). A
ratio is the median of the rounds' ratios, each round's contender over its own yardstick of that
round; every round's figure is printed, so the spread of a noisy machine shows. Everything runs
under its own exchange and etcd prefix, removed at the end. ``--amqp-url`` and ``--etcd`` point it
at another broker and etcd (a cluster's). bench/bench_compare.py runs these contenders with this
checkout's svc and another git ref's side by side (``--baseline main``).
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

from nirvana.cost import bare_pika, bare_pika_publish  # noqa: E402  (the yardsticks of chapter 8 too)

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


def svc_rate(world: World, service: str, events: int, enable_etcd: bool, prefetch: int, **code) -> float:
    """Events/s of ``python -m svc`` draining a full queue, from the times in its effect records
    (so the service's start and the wait for the end are not timed)."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    # The queue's depth costs etcd nothing; the effects are counted only once it is drained.
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    assert process.stop() == 0
    times = sorted(record["at"] for record in effects.records(world.etcd, service, prefix=world.prefix))
    assert len(times) == events, len(times)
    return (events - 1) / (times[-1] - times[0])


def sibling_rate(world: World, service: str, events: int, prefetch: int, **code) -> float:
    """Events/s of ``python -m svc`` on a full queue after a sibling claimed a window and died,
    counted over the events that sibling did not claim, all processed while its claims lived."""
    claim_ttl = 60  # the dead claims outlive the measurement; the survivor is stopped before they end
    fill(world, service, events)
    [dead] = world.start(service, enable_etcd=True, prefetch=prefetch, claim_ttl=claim_ttl, crash_at="claimed",
                         log_level="WARNING", wait=False, **code)
    assert dead.popen.wait(30) == -9, dead.log()
    # The broker drops a killed process's consumer when it sees its connection close (a moment later
    # on a loaded machine); counted still, it would make the survivor's start wait for a second one.
    wait_for(lambda: world.consumers(service) == 0, "the dead sibling's consumer gone", timeout=30)
    base = keys.dedup_prefix(world.prefix, service)
    claimed = {keys.decode_id(key[len(base):].decode()) for page in world.etcd.scan_prefix(base)
               for key, value in page if value.startswith(b"claimed ")}
    [process] = world.start(service, enable_etcd=True, prefetch=prefetch, claim_ttl=claim_ttl, log_level="WARNING",
                            **code)
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


def startup(world: World, service: str, **code) -> tuple[float, str]:
    """Seconds from spawning the service to its consumer on the queue; its "imported" log line."""
    # Its queue lives only while it is measured: left bound, it would collect every other run's events.
    topology.declare(world.channel(), world.exchange, services=(service,))
    started = time.perf_counter()
    [process] = world.start(service, enable_etcd=True, log_level="INFO", **code)
    elapsed = time.perf_counter() - started
    line = next((line for line in process.log().splitlines() if "imported" in line), "")
    assert process.stop() == 0
    world.channel().queue_delete(world.queue(service))
    return elapsed, line.split(": ", 1)[-1]


def spread(rates: list[float], fmt: str = "{:.0f}") -> str:
    return f"[{' '.join(fmt.format(rate) for rate in rates)}]"


def ratios(runs: dict[str, list[float]], name: str, base: str) -> list[float]:
    """Each round's ``name`` over the same round's ``base``."""
    return [rate / yardstick for rate, yardstick in zip(runs[name], runs[base], strict=True)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every bench of svc (this one and bench/bench_compare.py)."""
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds, interleaved; medians are printed")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="for both consumers")
    parser.add_argument("--done-ids", type=int, default=100000)
    parser.add_argument("--sibling-events", type=int, default=5000, help="events of the dead-sibling runs")
    parser.add_argument("--amqp-url", default=AMQP_URL, help="RabbitMQ (default: the stack's)")
    parser.add_argument("--etcd", default=ETCD_ENDPOINT, help="etcd endpoint(s) (default: the stack's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    runs = {name: [] for name in ("bare", "plain", "dedup", "bare publish", "publish", "healthy", "sibling",
                                  "start")}
    with tempfile.TemporaryDirectory() as logs:
        world = World(args.amqp_url, args.etcd, Path(logs))
        try:
            starter = world.service_name("start")
            world.channel().queue_delete(world.queue(starter))  # see startup
            lease = add_done_ids(world, starter, args.done_ids)
            contenders = {
                "bare": lambda service: bare_pika(world, service, args.events, args.prefetch),
                "plain": lambda service: svc_rate(world, service, args.events, False, args.prefetch),
                "dedup": lambda service: svc_rate(world, service, args.events, True, args.prefetch),
                "bare publish": lambda service: bare_pika_publish(world, service, args.events),
                "publish": lambda service: publish_rate(world, service, args.events),
                "healthy": lambda service: svc_rate(world, service, args.sibling_events, True, args.prefetch),
                "sibling": lambda service: sibling_rate(world, service, args.sibling_events, args.prefetch),
            }
            names = list(contenders)
            # Rounds interleave the contenders, so a busy moment of the machine hits all of them;
            # each measured queue is deleted after its run (see retire).
            for round_ in range(args.repeat):
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    service = world.service_name(name.replace(" ", "_"))
                    runs[name].append(contenders[name](service))
                    retire(world, service)
                seconds, imported = startup(world, starter)
                runs["start"].append(seconds)
                print(f"round {round_ + 1}: " + ", ".join(f"{name} {runs[name][-1]:.0f}" for name in names),
                      file=sys.stderr, flush=True)
            world.etcd.revoke(lease)
        finally:
            world.close()
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    print(f"{args.events} events per run, prefetch {args.prefetch}, median of {args.repeat} interleaved rounds "
          "[each round; ratios: each round against its own yardstick, the median of those]")
    print(f"{'bare pika consume+ack':32} {median['bare']:9.0f} events/s   1.00x                   {spread(runs['bare'])}")
    for name, label, goal in (("plain", "svc, dedup off", 0.8), ("dedup", "svc, etcd dedup", 0.5)):
        each = ratios(runs, name, "bare")
        print(f"{label:32} {median[name]:9.0f} events/s   {statistics.median(each):.2f}x  (goal >= {goal:.2f}x)  "
              f"{spread(runs[name])} {spread(each, '{:.2f}x')}")
    held = ratios(runs, "sibling", "healthy")
    label = "svc, a dead sibling's claims"
    print(f"{label:32} {median['sibling']:9.0f} events/s   "
          f"{statistics.median(held):.2f}x of its healthy {median['healthy']:.0f} events/s "
          f"(goal >= 0.80x, {args.sibling_events} events)  {spread(runs['sibling'])} {spread(held, '{:.2f}x')}")
    print(f"{'bare pika publisher, confirms':32} {median['bare publish']:9.0f} events/s   1.00x                   "
          f"{spread(runs['bare publish'])}")
    each = ratios(runs, "publish", "bare publish")
    print(f"{'svc.Publisher, confirms':32} {median['publish']:9.0f} events/s   {statistics.median(each):.2f}x  "
          f"(goal >= 0.90x)  {spread(runs['publish'])} {spread(each, '{:.2f}x')}")
    print(f"{'start to consuming, ' + str(args.done_ids) + ' done':32} {median['start']:9.2f} s                   "
          f"(goal <= 1.5 s) {spread(runs['start'], '{:.2f}')}")
    print(f"  service log (last round): {imported}")


if __name__ == "__main__":
    main()
