"""Benchmarks of svc against the real stack, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_svc.py [--events 50000] [--repeat 5] [--warmup 1] [--prefetch 1500]
                                        [--done-ids 100000] [--many-done-ids 1000000] [--sibling-events 50000]
                                        [--amqp-url URL] [--etcd HOST:PORT] [--latency-samples 100]
                                        [--latency-rounds 2] [--cluster] [--only healthy sibling ...]

- consume: a bare pika consume-and-ack loop (the yardstick), ``python -m svc`` without and with etcd
  deduplication, each draining the same number of events from the same queue setup
  (goals: svc without dedup >= 1.0x the bare loop, with dedup >= 0.75x); each of these runs also
  reads the CPU time of every process (bench/budget.py: the publisher filling the queue, RabbitMQ,
  the consumer, etcd) and prints CPU µs per event, so deduplication's extra cost is split by where
  it is paid;
- publish: a bare pika publisher with pipelined confirms (nirvana.cost.bare_pika_publish, the
  yardstick), ``svc.Publisher`` (goal >= 0.95x of the bare one);
- dead sibling (issue 8 case D; bench/siblings.py): a replica with CRASH_AT=claimed claims a window
  of a full queue and dies; the survivor's rate on the other events while those claims live, as a
  ratio of a healthy twin's rate measured AT THE SAME TIME (goal >= 0.9), on a classic queue and on
  a quorum queue (the same broker), every round. The twin is the same service, with the same
  CLAIM_TTL and number of events, in a world of its own (exchange, etcd prefix, name) on the same
  broker and etcd; both queues are filled, the sibling killed and the survivor's queue topped up
  with as many events as it claimed before either service starts; both start at once and each
  rate is counted from its own effect records over the seconds both drained, so the ratio is
  survivor / healthy with both contending for the same 2 cores, RabbitMQ and etcd in the same
  seconds. Beside it, an A/A control: two healthy services paired the same way, whose ratio is
  the method's own noise (no goal; the table gives each round's and the widest distance from 1.0x).
  This pairing replaced bracketing the survivor between two sequential healthy runs: on this
  2-core machine two healthy runs of one round differed by up to half (healthy against healthy
  bracketed so: 0.50x to 1.15x at load 4-7), wider than the 10% the goal asks to see, so rounds
  missed 0.9 at random. The A/A control measured paired (2026-12-07, load 1.4-4.8, 50,000 events,
  3 counted rounds a run): classic [1.02 1.06 1.03] and [1.04 1.10 1.11] (a warm-up 0.79),
  quorum [1.05 0.97 1.04] and [0.96 0.98 1.01]; on the cluster [1.05 0.97 1.03] and quorum
  [1.02 0.91 0.90]; with 150,000 events [0.93 1.05], quorum [0.93 0.95]. About 0.1 either side of
  1.0x, not 0.5: narrower, yet still the size of the goal's margin, so one round's survivor is read
  beside its round's control. The survivor alone (siblings.sibling_rate) stays for bench/bench_compare.py,
  which compares one checkout's svc with another's. 50,000 events a run by default;
- startup (bench/starts.py): from spawning ``python -m svc`` with ENABLE_ETCD=true to consuming,
  and its peak resident memory (VmHWM) once its import of done ids ended, with 100,000 done ids
  of that service in etcd (goal <= 1.5 s) and with 1,000,000 (a busy service's day; goal <= 3 s
  and <= 100 MB), once per round of a second pass, after every other group's rounds;
- busy etcd: in that second pass, with those 1,100,000 done ids in etcd, svc with etcd dedup again
  between runs of the bare loop (goal >= 0.75x, as dedup's). Those keys stay out of the first pass:
  they were in etcd through every round once the starts came (b539505), and etcd's CPU per event of
  a dedup run rose with them, in lumps — its heap holds every key and each Go garbage collection
  marks it all, so the run a collection falls in pays for it. Measured (a throwaway script, 50,000
  events a drain, the stack's etcd, 2026-12-07): 21-34 µs per event over 6 drains without them,
  24-49 (median 44) over 10 drains with them, 1-2 collections a drain either way; in the bench,
  dedup rounds of 0.57x and 0.76x came with etcd at 77 and 54 µs per event, a 0.80x one at 25.
- latency: publish to effect (etcd's watch shows its record), one lone event at a time on an idle
  svc, dedup off and on alternating (p50 and p99, ms), beside one etcd round trip.

A shared machine's speed changes from second to second, so each other contender is bracketed by its
yardstick in the same round: yardstick, contender, yardstick (the consume group: bare, plain, bare,
dedup, bare, each svc run between two bare runs), and its ratio is its rate over the mean of the
two runs around it. The groups run in an order that rotates from round to round, the contenders of
a group in an order that alternates, each on a fresh queue deleted after its run. Every round's
figures are printed as it ends (with the load average, the two yardstick runs around each ratio,
and each svc run's longest pause between two effects, which tells a stall of svc from a slow
machine); the table gives the median and the lowest ratio of the counted rounds and whether every
counted round met its goal. ``--warmup`` rounds run first and are printed, not counted (in each pass). Everything
runs under its own exchange and etcd prefix, retired after its run (its queue and keys deleted,
etcd's history compacted: see retire), removed at the end; then etcd is compacted and
defragmented, so the kit's etcd is left the size it was (its space freed, not only its keys).
``--amqp-url`` and ``--etcd`` point it at another broker and etcd (a cluster's); ``--cluster``
then runs the same rounds on a private cluster of its own (nirvana.scale.Cluster: three etcd
members, three RabbitMQ nodes on free ports, quorum queues, the contenders connected to the first
node) and prints its table and both side by side (the goals are the single node's: on one machine
every etcd write of a cluster waits for two members' disk syncs on the same disk).
bench/bench_compare.py runs these contenders with this checkout's svc and another git ref's side by
side (``--baseline main``).
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from svc import etcd as _etcd, effects, keys, topology  # noqa: E402
from svc.config import DEFAULT_PREFETCH, parse_endpoints  # noqa: E402
from nirvana.testing import World, wait_for  # noqa: E402

from nirvana.cost import bare_pika, bare_pika_publish, fill  # noqa: E402,F401  (chapter 8's too)

from nirvana.prune import prune  # noqa: E402
from budget import Stack, add, bare_rate, latencies, per_event, timed_fill  # noqa: E402
from starts import add_done_ids, drop, spread, startup  # noqa: E402,F401  (bench_compare's too)
from siblings import SIBLING_CLAIM_TTL, overlapping, paired, sibling_rate, sibling_settings  # noqa: E402,F401  (and theirs)
from svc_report import BUDGETED, BUSY, GOALS, GROUPS, PAIRED, chosen, print_round, report, side_by_side  # noqa: E402,F401

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ETCD_ENDPOINT = "127.0.0.1:2379"
EVENT = {"type": "new_order", "id": "bench", "args": {"sku": "talk-tshirt", "qty": 1}}


def retire(world: World, service: str) -> None:
    """Delete a measured service's queue and etcd keys, then compact etcd's history: every queue of
    the world is bound to the one exchange with ``#``, so a queue left behind would receive (and
    slow) every later fill; and etcd keeps every revision since its last compaction in its heap
    (the kit's compacts every 10 minutes, a whole bench), which grew from 0.4 to 1.5 GB over the
    rounds, so that each of its Go garbage collections cost 0.5-1.1 s of CPU, landing on whichever
    run it fell in (measured 2026-12-07, GODEBUG=gctrace=1 on a throwaway etcd under the whole
    bench: collections took 29% of etcd's CPU in the first pass; with this compaction, 12% in all,
    and a dedup run's etcd CPU per event 20-28 µs in every round against 22-53 without)."""
    world.channel().queue_delete(world.queue(service))
    world.services.discard(service)
    for base in (keys.dedup_prefix(world.prefix, service), keys.effects_prefix(world.prefix, service)):
        world.etcd.delete_prefix(base)
    compact_history(world)


def compact_history(world: World) -> None:
    """Compact etcd's history up to now (physically, no defragment; up to 300 s): see retire."""
    world.etcd.compact_and_defragment(timeout=300, defragment=False)


def svc_rate(world: World, service: str, events: int, enable_etcd: bool, prefetch: int, pauses: list | None = None,
             stack: Stack | None = None, budget: dict | None = None, start_cpu: float = 0.0, **code) -> float:
    """Events/s of ``python -m svc`` draining a full queue, from the times in its effect records
    (so the service's start and the wait for the end are not timed). ``pauses``, if given, gets
    the longest time (s) between two consecutive effects (a window's; the rest are milliseconds).
    ``budget``, if given, gets the CPU µs per event of each process (``stack``'s, the publisher's
    fill, svc's less ``start_cpu``, the seconds of CPU its start takes: see :func:`start_cpu`)."""
    timed_fill(world, service, events, stack, budget)
    before = stack.cpu() if stack and budget is not None else None
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    # The queue's depth costs etcd nothing; the effects are counted only once it is drained.
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    if before is not None:
        after = stack.cpu(consumer=process.pid)
        add(budget, per_event({**before, "consumer": start_cpu}, after, events))
    assert process.stop() == 0
    times = sorted(record["at"] for record in effects.records(world.etcd, service, prefix=world.prefix))
    assert len(times) == events, len(times)
    if pauses is not None:
        pauses.append(max(b - a for a, b in itertools.pairwise(times)))
    return (events - 1) / (times[-1] - times[0])


def start_cpu(world: World, enable_etcd: bool, prefetch: int, **code) -> float:
    """CPU seconds ``python -m svc`` takes to start consuming (imports, connections), on an idle
    queue: what :func:`svc_rate` takes off its CPU so that the budget counts events only."""
    service = world.service_name("idle")
    topology.declare(world.channel(), world.exchange, services=(service,), **world.queue_arguments)
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    seconds = psutil.Process(process.pid).cpu_times()
    assert process.stop() == 0
    retire(world, service)
    return seconds.user + seconds.system


def publish_rate(world: World, service: str, events: int) -> float:
    publisher = world.publisher(service)
    publisher.publish(EVENT)  # declares the topology first, outside the timing
    started = time.perf_counter()
    result = publisher.publish(EVENT, count=events, fresh_ids=True)
    elapsed = time.perf_counter() - started
    assert result.ok, result
    return events / elapsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every bench of svc (this one and bench/bench_compare.py)."""
    parser.add_argument("--events", type=int, default=50000, help="events per run (a second of noise stays small)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, interleaved; medians are printed")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="for both consumers")
    parser.add_argument("--done-ids", type=int, default=100000)
    parser.add_argument("--many-done-ids", type=int, default=1000000, help="a second start's done ids (0: none)")
    parser.add_argument("--sibling-events", type=int, default=50000,
                        help="events of the dead-sibling runs (the survivor's and its healthy twin's, each)")
    parser.add_argument("--amqp-url", default=AMQP_URL, help="RabbitMQ (default: the stack's)")
    parser.add_argument("--etcd", default=ETCD_ENDPOINT, help="etcd endpoint(s) (default: the stack's)")


def run_round(world: World, args, round_: int, measure, groups: tuple = GROUPS, pair=None) -> dict:
    """One round: each group's yardstick, then each contender followed by its yardstick again, the
    groups in an order that rotates by ``round_`` and a group's contenders alternating. Returns
    {contender: (rate, yardstick before, yardstick after, longest pause or None)}. A paired group
    (svc_report.PAIRED: the dead sibling's) runs its contender and its A/A control instead, each at
    the same time as a healthy twin (``pair(name, contender_first)``: its siblings.Pair, the ratio
    of the two rates in the same seconds), which of the two goes first and which service starts
    first alternating from round to round."""
    groups = groups[round_ % len(groups):] + groups[:round_ % len(groups)]
    result = {}
    for yardstick, contenders in groups:
        if yardstick in PAIRED:
            names = (*contenders, PAIRED[yardstick])
            for name in names if round_ % 2 == 0 else names[::-1]:
                result[name] = pair(name, round_ % 2 == 0)
            continue
        before = measure(yardstick)[0]
        for name in contenders if round_ % 2 == 0 else tuple(reversed(contenders)):
            rate, pause = measure(name)
            after = measure(yardstick)[0]
            result[name] = (rate, before, after, pause)
            before = after
    return result


def bench(args, amqp_urls: list[str], etcd: str, queue_type: str = "classic") -> dict:
    """Every round against one broker (the contenders on ``amqp_urls[0]``) and etcd: {"counted":
    each counted round's {contender: figures}, "starts": each counted round's {done ids: (start
    seconds, peak MB)}, "imported": {done ids: the last start's log line}, "budgets": {contender:
    each counted run's CPU µs per event by process}, "latency": {contender: milliseconds},
    "round_trip": one etcd transaction, ms}."""
    counted: list[dict] = []
    starts: list[dict] = []
    imported: dict[int, str] = {}
    budgets: dict[str, list[dict]] = {name: [] for name in BUDGETED}
    stack = Stack(amqp_urls, etcd)
    with tempfile.TemporaryDirectory() as logs:
        world = World(amqp_urls[0], etcd, Path(logs), queue_type=queue_type)
        # The dead sibling on a quorum queue too, on the same broker (the cluster's are all quorum).
        quorum = World(amqp_urls[0], etcd, Path(logs), queue_type="quorum")
        lone: list[str] = []
        try:
            starters, leases, whole = {}, [], not args.only   # --only: the groups' rounds alone
            groups = chosen(args.only)
            idle = {False: 0.0, True: 0.0}
            if {"plain", "dedup"} & {name for _, names in groups for name in names}:
                idle = {dedup: statistics.median(start_cpu(world, dedup, args.prefetch) for _ in range(3))
                        for dedup in (False, True)}
                print(f"svc's CPU to start consuming (idle queue, median of 3): {idle[False]:.2f} s dedup off, "
                      f"{idle[True]:.2f} s dedup on (taken off its runs' CPU)", file=sys.stderr, flush=True)
            budget: dict = {}
            contenders = {
                "bare": lambda service, _: bare_rate(world, service, args.events, args.prefetch, stack, budget),
                "plain": lambda service, pauses: svc_rate(world, service, args.events, False, args.prefetch, pauses,
                                                          stack, budget, idle[False]),
                "dedup": lambda service, pauses: svc_rate(world, service, args.events, True, args.prefetch, pauses,
                                                          stack, budget, idle[True]),
                "bare again": lambda service, _: bare_rate(world, service, args.events, args.prefetch),
                "dedup busy": lambda service, pauses: svc_rate(world, service, args.events, True, args.prefetch,
                                                               pauses, stack, budget, idle[True]),
                "bare publish": lambda service, _: bare_pika_publish(world, service, args.events),
                "publish": lambda service, _: publish_rate(world, service, args.events),
            }

            def pair(name: str, contender_first: bool):
                # The contender and its healthy twin, each in a world of its own (see siblings.py), made
                # for this pair: a world's connection left idle while others run longer than the broker's
                # 60 s heartbeat timeout is closed by the broker (it was, with 150,000 events a run).
                kind = "quorum" if name.endswith("quorum") else queue_type

                def once():
                    both = [World(amqp_urls[0], etcd, Path(logs), queue_type=kind) for _ in range(2)]
                    try:
                        return paired((both[0], both[0].service_name("twin")),
                                      (both[1], both[1].service_name(name.replace(" ", "_"))), args.sibling_events,
                                      args.prefetch, dead=name.startswith("sibling"), contender_first=contender_first)
                    finally:
                        for one in both:
                            one.close()
                        compact_history(world)   # as retire does
                return overlapping(once, name, args.sibling_events)

            def measure(name: str) -> tuple[float, float | None]:
                on = quorum if name.endswith("quorum") else world
                service, pauses = on.service_name(name.replace(" ", "_")), []
                budget.clear()
                rate = contenders[name](service, pauses)
                retire(on, service)
                if budget:
                    this_round[name].append(dict(budget))
                return rate, (pauses or [None])[0]

            def rounds(groups: tuple, busy: str = "") -> None:
                # Every round of these groups; with ``busy``, the starts too, and each counted round's
                # figures join those of the same round of the first pass.
                nonlocal this_round
                for round_ in range(args.warmup + args.repeat):
                    load = os.getloadavg()
                    this_round = {name: [] for name in BUDGETED}
                    result = run_round(world, args, round_, measure, groups, pair)
                    started = {}
                    for done_ids, starter in starters.items():
                        *started[done_ids], imported[done_ids] = startup(world, starter)
                    tag = f"warm-up {round_ + 1}" if round_ < args.warmup else f"round {round_ + 1 - args.warmup}"
                    print_round(tag + busy, load, result, started, this_round, os.getloadavg()[0])
                    if round_ >= args.warmup:
                        if busy:
                            counted[round_ - args.warmup].update(result)
                            starts.append(started)
                        else:
                            counted.append(result)
                        for name, runs in this_round.items():
                            budgets[name].extend(runs)

            this_round: dict[str, list[dict]] = {}
            # First every group on an etcd holding only the bench's own runs (each retired after it)...
            rounds(groups)
            latency, round_trips = {}, []
            for round_ in range(args.latency_rounds if whole else 0):
                for name in ("plain", "dedup") if round_ % 2 == 0 else ("dedup", "plain"):
                    service = world.service_name("lone")
                    lone.append(service)
                    topology.declare(world.channel(), world.exchange, services=(service,), **world.queue_arguments)
                    latency.setdefault(name, []).extend(
                        latencies(world, service, name == "dedup", args.latency_samples, EVENT, round_trips))
                    retire(world, service)
            # ...then, with the starts' done ids in etcd (as a busy service's after a day), the starts and
            # dedup again beside its bare loop: etcd's heap holds every key (its Go GC marks it all), so
            # its CPU per event rises, in lumps as collections come (this module's docstring)
            for done_ids in (args.done_ids, args.many_done_ids) if whole else ():
                if done_ids and done_ids not in starters:
                    starters[done_ids] = world.service_name(f"start{done_ids}")
                    world.channel().queue_delete(world.queue(starters[done_ids]))  # see startup
                    leases.append(add_done_ids(world, starters[done_ids], done_ids))
            if starters:
                groups = (*groups, *BUSY)
                rounds(BUSY, f", etcd holding {sum(starters):,} done ids")
            for lease, service in zip(leases, starters.values(), strict=True):
                drop(world, lease, service)
        finally:
            quorum.close()
            world.close()
            try:
                prune(lone)   # the lone-event services' metrics, from statsd and Graphite's tree
            except OSError:
                pass
        reclaim(etcd)
    return {"counted": counted, "starts": starts, "imported": imported, "budgets": budgets, "latency": latency,
            "round_trip": statistics.median(round_trips) if round_trips else None, "groups": groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first, printed, not counted")
    parser.add_argument("--cluster", action="store_true",
                        help="then the same rounds on a private cluster (3 etcd members, 3 RabbitMQ nodes, quorum "
                             "queues) started on free ports; both tables printed, then side by side")
    parser.add_argument("--latency-samples", type=int, default=100, help="lone events per latency run")
    parser.add_argument("--latency-rounds", type=int, default=2, help="latency runs of each, alternating")
    parser.add_argument("--only", nargs="+", choices=[name for group in GROUPS for name in (group[0], *group[1])],
                        help="only the groups of these yardsticks or contenders (no starts, no latencies)")
    args = parser.parse_args()
    single = bench(args, [args.amqp_url], args.etcd)
    report(args, single)
    if args.cluster:
        from nirvana.scale import Cluster   # only here: it loads the kit's stack code
        cluster = Cluster(progress=lambda line: print(line, file=sys.stderr, flush=True)).up()
        try:
            shape = cluster.shape
            print(f"\ncluster: RabbitMQ {', '.join(u.split('@')[-1] for u in shape.amqp_urls)} (quorum queues, the "
                  f"contenders on the first node), etcd {shape.etcd_endpoints}", flush=True)
            clustered = bench(args, list(shape.amqp_urls), shape.etcd_endpoints, queue_type="quorum")
        finally:
            cluster.close()
        report(args, clustered)
        side_by_side(single, clustered)


def reclaim(endpoints: str) -> None:
    """Compact and defragment the bench's etcd: its deleted keys' space is given back."""
    etcd = _etcd.Etcd(parse_endpoints(endpoints))
    try:
        sizes = etcd.compact_and_defragment()
        print(f"etcd compacted and defragmented: {', '.join(f'{size / 1e6:.2f} MB' for size in sizes)}",
              file=sys.stderr)
    finally:
        etcd.close()


if __name__ == "__main__":
    main()
