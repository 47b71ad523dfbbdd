"""svc of this checkout against svc of another git ref, side by side in one run; prints ratios.

    .venv/bin/python bench/bench_compare.py --baseline main [--only plain,dedup,cpu,sibling,start]
                                            [--events 50000] [--repeat 5] [--prefetch N] [--done-ids 100000]

Every ``python -m svc`` contender of bench/bench_svc.py runs twice a round, this checkout's svc and
the baseline's (a git ref exported with ``git archive``, or a folder holding ``svc/``), alternating
which goes first, against the same broker, etcd and yardstick (a bare pika consumer, each round);
it prints each variant's figures and this checkout's as a ratio of the baseline's, each round
against its own twin, so a change is judged in one run (issue 11: "no speed lost"):

- plain, dedup: events/s draining a full queue, without and with etcd deduplication;
- cpu: CPU time ``python -m svc`` spends per 1000 events, without and with deduplication (the
  measure a loaded machine disturbs least: other processes take turns, not this one's work);
- sibling: the survivor's rate while a dead sibling's claims live, and its healthy twin's;
- start: from spawning to consuming with ``--done-ids`` done ids in etcd.

At the end etcd is compacted and defragmented (bench_svc.reclaim), as bench/bench_svc.py leaves it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from budget import Stack

from nirvana import launcher

from bench_svc import (EVENT, GOALS, World, add_arguments, add_done_ids, bare_pika, reclaim, retire, sibling_rate,
                       sibling_settings, spread, startup, svc_rate, wait_for)

ROOT = Path(__file__).resolve().parent.parent


def svc_cpu(world: World, service: str, events: int, enable_etcd: bool, prefetch: int, stack: Stack | None = None,
            **code) -> dict[str, float]:
    """CPU milliseconds (user + system) ``python -m svc`` spends per 1000 events, counted from its
    consumer's start to its last effect: what the service's own code costs, which a busy machine
    changes far less than it changes a rate (other processes take turns, not this one's work).
    {"": svc's, "-etcd": etcd's over the same time (``stack``'s etcd; absent without a stack)}."""
    [process] = world.start(service, enable_etcd=enable_etcd, prefetch=prefetch, log_level="WARNING", **code)
    etcd_before = stack.cpu()["etcd"] if stack is not None else 0.0
    before = psutil.Process(process.pid).cpu_times()
    result = world.publisher(service).publish(EVENT, count=events, fresh_ids=True)
    assert result.ok, result
    wait_for(lambda: world.depth(service) == 0, "the queue drained", timeout=300, interval=0.2)
    wait_for(lambda: world.effects(service) >= events, f"{events} effects", timeout=60, interval=0.2)
    after = psutil.Process(process.pid).cpu_times()
    figures = {"": (after.user + after.system - before.user - before.system) * 1000 / events * 1000}
    if stack is not None:
        figures["-etcd"] = (stack.cpu()["etcd"] - etcd_before) * 1000 / events * 1000
    assert process.stop() == 0
    return figures


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
        raise SystemExit(f"bench_compare: --baseline {baseline}: neither a folder with svc/ nor a git ref "
                         f"({archive.stderr.decode(errors='replace').strip()})")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into


def alternating(baseline: str, rounds: int, measure, names: tuple[str, ...]) -> dict[str, list[float]]:
    """``measure(folder)`` (a tuple of figures named ``names``) of this checkout's svc ("") and of
    ``baseline``'s ("@base"; see :func:`checkout`), ``rounds`` times, alternating which goes first:
    {name + suffix: [its figure in each round]}."""
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(baseline, Path(tmp) / "baseline")
        runs: dict[str, list[float]] = {}
        for round_ in range(rounds):
            order = [("", ROOT), ("@base", base)]
            for suffix, folder in order if round_ % 2 == 0 else reversed(order):
                for name, figure in zip(names, measure(folder), strict=True):
                    runs.setdefault(name + suffix, []).append(figure)
    return runs


def child_figures(folder: Path, child: str, *args: str) -> list[float]:
    """Run the script ``child`` (its arguments ``args``) in a fresh interpreter that imports the svc
    of ``folder`` (checked: AssertionError naming what it imported instead); the figures of its one
    line of output, space-separated."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    out = subprocess.run([sys.executable, "-c", "import svc; print(svc.__file__)\n" + child, *args], env=env,
                         cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600, check=True)
    path, numbers = out.stdout.splitlines()
    assert path == str(folder / "svc" / "__init__.py"), f"imported {path}, not {folder}/svc"
    return [float(number) for number in numbers.split()]


def checkout_env(folder: Path) -> dict[str, str]:
    """The settings that make ``python -m svc`` import the svc of ``folder``. nirvana.launcher
    starts it in this checkout (its ``cwd``), which Python would put first on sys.path, before
    PYTHONPATH: PYTHONSAFEPATH keeps it off, and PYTHONPATH comes before .venv's link to this
    checkout. Checked here, from the same folder: raises SystemExit when another svc is imported."""
    settings = {"pythonpath": str(folder), "pythonsafepath": "1"}
    env = {**os.environ, **{key.upper(): value for key, value in settings.items()}}
    found = subprocess.run([sys.executable, "-c", "import svc; print(svc.__file__)"], env=env, cwd=launcher.Command.cwd,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    if found != str(folder / "svc" / "__init__.py"):
        raise SystemExit(f"bench_compare: python -m svc would import {found or 'nothing'}, not {folder}/svc")
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--baseline", required=True, metavar="REF", help="git ref (or folder with svc/) to compare with")
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
    reclaim(args.etcd)
    report(args, only, variants, runs)


CONTENDERS = ("plain", "dedup", "cpu", "sibling", "start")


def measure(args, only: list[str], variants: dict[str, dict], logs: Path) -> dict[str, list[float]]:
    """Every round: the bare yardstick, then each contender of ``only`` in each variant (this
    checkout's svc "", the baseline's "@base"), alternating which variant goes first."""
    runs: dict[str, list[float]] = {"bare": []}
    world = World(args.amqp_url, args.etcd, logs)
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
                for suffix, code in order:
                    for kind, measure_one in _runs(args, name, code):
                        service = world.service_name(kind)
                        figures = measure_one(world, service)
                        for extra, figure in (figures.items() if isinstance(figures, dict) else [("", figures)]):
                            runs.setdefault(kind + extra + suffix, []).append(figure)
                        retire(world, service)
            if "start" in only:
                for suffix, code in order:
                    seconds, _peak, imported = startup(world, starter, **code)
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
        stack = Stack([args.amqp_url], args.etcd)
        return [(f"cpu-{kind}", lambda world, service, dedup=dedup: svc_cpu(world, service, args.events, dedup,
                                                                          args.prefetch, stack, **code))
                for kind, dedup in (("plain", False), ("dedup", True))]
    if name == "sibling":
        return [("healthy", lambda world, service: svc_rate(world, service, args.sibling_events, True, args.prefetch,
                                                             **sibling_settings(**code))),
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
        for name, label in (("plain", "svc, dedup off"), ("dedup", "svc, etcd dedup")):
            if name not in only:
                continue
            rates = runs[name + suffix]
            ratios = [rate / base for rate, base in zip(rates, runs["bare"], strict=True)]
            rate = statistics.median(rates)
            print(f"{label + tag:40} {rate:9.0f} events/s   {rate / bare:.2f}x  (goal >= {GOALS[name]:.2f}x)  "
                  f"{spread(rates)} "
                  f"{spread(ratios, '{:.2f}x')}")
        if "sibling" in only:
            held = [rate / base for rate, base in zip(runs["sibling" + suffix], runs["healthy" + suffix], strict=True)]
            label = "svc, a dead sibling's claims" + tag
            print(f"{label:40} {statistics.median(runs['sibling' + suffix]):9.0f} events/s   "
                  f"{statistics.median(held):.2f}x of its healthy {statistics.median(runs['healthy' + suffix]):.0f} "
                  f"events/s (goal >= {GOALS['sibling']:.2f}x, {args.sibling_events} events)  "
                  f"{spread(runs['sibling' + suffix])} "
                  f"{spread(held, '{:.2f}x')}")
        if "cpu" in only:
            for kind in ("plain", "dedup", "plain-etcd", "dedup-etcd"):
                label = f"{'etcd' if kind.endswith('etcd') else 'svc'} CPU, dedup {'off' if kind.startswith('plain') else 'on'}{tag}"
                print(f"{label:40} {statistics.median(runs[f'cpu-{kind}' + suffix]):9.0f} CPU ms per 1000 events  "
                      f"{spread(runs[f'cpu-{kind}' + suffix])}")
        if "start" in only:
            print(f"{'start to consuming, ' + str(args.done_ids) + ' done' + tag:40} "
                  f"{statistics.median(runs['start' + suffix]):9.2f} s                   "
                  f"(goal <= 1.5 s) {spread(runs['start' + suffix], '{:.2f}')}")
            print(f"  service log (last round): {runs['imported' + suffix][0]}")
    if args.baseline:
        print(f"this checkout's svc as a ratio of {args.baseline}'s (each round against its twin; median [each round]):")
        kinds = [kind for kind in ("plain", "dedup", "healthy", "sibling", "cpu-plain", "cpu-dedup", "cpu-plain-etcd",
                                   "cpu-dedup-etcd") if kind in runs]
        for kind in kinds + (["start"] if "start" in only else []):
            ratios = [mine / base for mine, base in zip(runs[kind], runs[kind + "@base"], strict=True)]
            what = "start time" if kind == "start" else "CPU/event" if kind.startswith("cpu") else "events/s"
            print(f"  {kind:10} {what:10} {statistics.median(ratios):.3f}x  {spread(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
