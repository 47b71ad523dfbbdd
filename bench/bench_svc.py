"""Benchmarks of svc against the real stack, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_svc.py [--events 20000] [--repeat 5] [--prefetch 100] [--done-ids 100000]
                                        [--sibling-events 5000]

- consume: a bare pika consume-and-ack loop, then ``python -m svc`` without and with etcd
  deduplication, each draining the same number of events from the same queue setup
  (goals: svc without dedup >= 0.8x the bare loop, with dedup >= 0.5x);
- cpu: CPU time ``python -m svc`` spends per 1000 events, without and with etcd deduplication
  (the measure a loaded machine disturbs least: compare checkouts with it);
- publish: ``svc.Publisher`` with pipelined confirms, events/s (goal >= 5,000);
- dead sibling (issue 8 case D): a replica with CRASH_AT=claimed claims a window of a full queue and
  dies; the survivor's rate on the other events while those claims live, as a ratio of its healthy
  rate (the same service draining the same number of events alone, in the same round; goal >= 0.8);
- startup: from spawning ``python -m svc`` with ENABLE_ETCD=true to consuming, with 100,000 done
  ids of that service in etcd (goal <= 1.5 s), once per round.

Each round runs every contender once, on a fresh queue deleted after its run; the medians are
printed with every round's figure, so the spread of a noisy machine shows. Everything runs under
its own exchange and etcd prefix, removed at the end.

``--baseline REF`` (a git ref such as ``main``, or a folder holding an ``svc/`` package) runs every
``python -m svc`` contender twice a round, this checkout's svc and the baseline's (exported with
``git archive``), alternating which goes first, against the same broker, etcd and yardstick; it
prints this checkout's rate as a ratio of the baseline's (each round against its own twin), so a
change is judged in one run: ``bench/bench_svc.py --baseline main --only plain,dedup``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # ROOT


import psutil  # noqa: E402

from svc import _etcd, effects, keys, topology  # noqa: E402
from svc.config import DEFAULT_PREFETCH  # noqa: E402
from svc.testing import World, wait_for  # noqa: E402

from nirvana.cost import bare_pika  # noqa: E402  (the yardstick chapter 8 measures too)

ROOT = Path(__file__).resolve().parent.parent
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
    (so the service's start and the wait for the end are not timed). ``code``: settings that say
    which svc runs (``pythonpath=...``, see checkout_env)."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    # The queue's depth costs etcd nothing; the effects are counted only once it is drained.
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    assert process.stop() == 0
    times = sorted(record["at"] for record in effects.records(world.etcd, service, prefix=world.prefix))
    assert len(times) == events, len(times)
    return (events - 1) / (times[-1] - times[0])


def svc_cpu(world: World, service: str, events: int, enable_etcd: bool, prefetch: int, **code) -> float:
    """CPU milliseconds (user + system) ``python -m svc`` spends per 1000 events, counted from its
    consumer's start to its last effect: what the service's own code costs, which a busy machine
    changes far less than it changes a rate (other processes take turns, not this one's work)."""
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    before = psutil.Process(process.pid).cpu_times()
    result = world.publisher(service).publish(EVENT, count=events, fresh_ids=True)
    assert result.ok, result
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    after = psutil.Process(process.pid).cpu_times()
    assert process.stop() == 0
    return (after.user + after.system - before.user - before.system) * 1000 / events * 1000


def sibling_rate(world: World, service: str, events: int, prefetch: int, **code) -> float:
    """Events/s of ``python -m svc`` on a full queue after a sibling claimed a window and died,
    counted over the events that sibling did not claim, all processed while its claims lived."""
    claim_ttl = 60  # the dead claims outlive the measurement; the survivor is stopped before they end
    fill(world, service, events)
    [dead] = world.start(service, enable_etcd=True, prefetch=prefetch, claim_ttl=claim_ttl, crash_at="claimed",
                         log_level="WARNING", wait=False, **code)
    assert dead.popen.wait(30) == -9, dead.log()
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


def checkout(baseline: str, into: Path) -> Path:
    """A folder holding the baseline's ``svc`` package: ``baseline`` itself if it is such a folder,
    else the git ref ``baseline`` of this repository exported into ``into`` (``git archive``).
    Raises SystemExit with one line when it is neither."""
    if (Path(baseline) / "svc" / "__init__.py").is_file():
        return Path(baseline).resolve()
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", baseline, "svc"],
                             capture_output=True, timeout=60)
    if archive.returncode:
        raise SystemExit(f"bench_svc: --baseline {baseline}: neither a folder with svc/ nor a git ref "
                         f"({archive.stderr.decode(errors='replace').strip()})")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into


def checkout_env(folder: Path) -> dict[str, str]:
    """The settings that make ``python -m svc`` (started from a folder without svc/) import the svc
    of ``folder``: PYTHONPATH comes before .venv's link to this checkout. Checked here: raises
    SystemExit when another svc is imported."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    found = subprocess.run([sys.executable, "-c", "import svc; print(svc.__file__)"], env=env, cwd=tempfile.gettempdir(),
                           capture_output=True, text=True, timeout=60).stdout.strip()
    if found != str(folder / "svc" / "__init__.py"):
        raise SystemExit(f"bench_svc: python -m svc would import {found or 'nothing'}, not {folder}/svc")
    return {"pythonpath": str(folder)}


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
    parser.add_argument("--baseline", metavar="REF", help="also run the svc of this git ref (or folder), side by side")
    parser.add_argument("--only", default=",".join(CONTENDERS), metavar="NAMES",
                        help=f"comma-separated contenders out of {','.join(CONTENDERS)} (bare is always run)")
    args = parser.parse_args()
    only = [name for name in CONTENDERS if name in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(CONTENDERS)
    if unknown or not only:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(CONTENDERS)})")
    with tempfile.TemporaryDirectory() as logs:
        os.chdir(logs)   # `python -m svc` puts its working folder first on sys.path: one without svc/
        variants = {"": checkout_env(ROOT)}
        if args.baseline:
            variants["@base"] = checkout_env(checkout(args.baseline, Path(logs) / "baseline"))
        runs = measure(args, only, variants, Path(logs))
    report(args, only, variants, runs)


CONTENDERS = ("plain", "dedup", "cpu", "publish", "sibling", "start")


def measure(args, only: list[str], variants: dict[str, dict], logs: Path) -> dict[str, list[float]]:
    """Every round: the bare yardstick, then each contender of ``only`` in each variant (this
    checkout's svc "", the baseline's "@base"), alternating which variant goes first."""
    runs: dict[str, list[float]] = {"bare": []}
    world = World(AMQP_URL, args.etcd, logs)
    try:
        if "start" in only:
            starter = world.service_name("start")
            world.channel().queue_delete(world.queue(starter))  # see startup
            lease = add_done_ids(world, starter, args.done_ids)
        for round_ in range(args.repeat):
            order = list(variants.items()) if round_ % 2 == 0 else list(reversed(variants.items()))
            service = world.service_name("bare")
            runs["bare"].append(bare_pika(world, service, args.events, args.prefetch))
            retire(world, service)
            for name in only:
                for suffix, code in order if name != "publish" else [("", {})]:  # the publisher runs in here
                    for kind, measure_one in _runs(args, name, code):
                        service = world.service_name(kind)
                        runs.setdefault(kind + suffix, []).append(measure_one(world, service))
                        retire(world, service)
            if "start" in only:
                for suffix, code in order:
                    seconds, imported = startup(world, starter, **code)
                    runs.setdefault("start" + suffix, []).append(seconds)
                    runs["imported" + suffix] = [imported]
        if "start" in only:
            world.etcd.revoke(lease)
    finally:
        world.close()
    return runs


def _runs(args, name: str, code: dict):
    """(kind, measure(world, service)) of contender ``name``: the dead sibling comes with its healthy twin."""
    if name == "plain":
        return [("plain", lambda world, service: svc_rate(world, service, args.events, False, args.prefetch, **code))]
    if name == "dedup":
        return [("dedup", lambda world, service: svc_rate(world, service, args.events, True, args.prefetch, **code))]
    if name == "cpu":
        return [(f"cpu-{kind}", lambda world, service, dedup=dedup: svc_cpu(world, service, args.events, dedup,
                                                                          args.prefetch, **code))
                for kind, dedup in (("plain", False), ("dedup", True))]
    if name == "publish":
        return [("publish", lambda world, service: publish_rate(world, service, args.events))]
    if name == "sibling":
        return [("healthy", lambda world, service: svc_rate(world, service, args.sibling_events, True, args.prefetch,
                                                             **code)),
                ("sibling", lambda world, service: sibling_rate(world, service, args.sibling_events, args.prefetch,
                                                                **code))]
    return []   # start: once per round, on its own service (see measure)


def report(args, only: list[str], variants: dict[str, dict], runs: dict[str, list[float]]) -> None:
    bare = statistics.median(runs["bare"])
    print(f"{args.events} events per run, prefetch {args.prefetch}, median of {args.repeat} interleaved rounds "
          "[each round; for ratios, each round against its own bare run]")
    if args.baseline:
        print(f"svc of this checkout ({variants['']['pythonpath']}) and of {args.baseline} "
              f"({variants['@base']['pythonpath']}) alternate within each round")
    print(f"{'bare pika consume+ack':40} {bare:9.0f} events/s   1.00x                   {spread(runs['bare'])}")
    for suffix in variants:
        tag = f" [{args.baseline}]" if suffix else ""
        for name, label, goal in (("plain", "svc, dedup off", 0.8), ("dedup", "svc, etcd dedup", 0.5)):
            if name not in only:
                continue
            rates = runs[name + suffix]
            ratios = [rate / base for rate, base in zip(rates, runs["bare"], strict=True)]
            rate = statistics.median(rates)
            print(f"{label + tag:40} {rate:9.0f} events/s   {rate / bare:.2f}x  (goal >= {goal:.2f}x)  {spread(rates)} "
                  f"{spread(ratios, '{:.2f}x')}")
        if "sibling" in only:
            held = [rate / base for rate, base in zip(runs["sibling" + suffix], runs["healthy" + suffix], strict=True)]
            label = "svc, a dead sibling's claims" + tag
            print(f"{label:40} {statistics.median(runs['sibling' + suffix]):9.0f} events/s   "
                  f"{statistics.median(held):.2f}x of its healthy {statistics.median(runs['healthy' + suffix]):.0f} "
                  f"events/s (goal >= 0.80x, {args.sibling_events} events)  {spread(runs['sibling' + suffix])} "
                  f"{spread(held, '{:.2f}x')}")
        if "cpu" in only:
            for kind in ("plain", "dedup"):
                label = f"svc CPU, dedup {'off' if kind == 'plain' else 'on'}{tag}"
                print(f"{label:40} {statistics.median(runs[f'cpu-{kind}' + suffix]):9.0f} CPU ms per 1000 events  "
                      f"{spread(runs[f'cpu-{kind}' + suffix])}")
        if "start" in only:
            print(f"{'start to consuming, ' + str(args.done_ids) + ' done' + tag:40} "
                  f"{statistics.median(runs['start' + suffix]):9.2f} s                   "
                  f"(goal <= 1.5 s) {spread(runs['start' + suffix], '{:.2f}')}")
            print(f"  service log (last round): {runs['imported' + suffix][0]}")
    if "publish" in only:
        print(f"{'svc.Publisher, confirms':40} {statistics.median(runs['publish']):9.0f} events/s            "
              f"(goal >= 5000)  {spread(runs['publish'])}")
    if args.baseline:
        print(f"this checkout's svc as a ratio of {args.baseline}'s (each round against its twin; median [each round]):")
        kinds = [kind for kind in ("plain", "dedup", "healthy", "sibling", "cpu-plain", "cpu-dedup") if kind in runs]
        for kind in kinds + (["start"] if "start" in only else []):
            ratios = [mine / base for mine, base in zip(runs[kind], runs[kind + "@base"], strict=True)]
            what = "start time" if kind == "start" else "CPU/event" if kind.startswith("cpu") else "events/s"
            print(f"  {kind:10} {what:10} {statistics.median(ratios):.3f}x  {spread(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
