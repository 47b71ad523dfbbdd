"""The tables of bench/bench_svc.py: its groups of contenders, their goals, and what it prints
(each round as it ends, a run's table, a single node's and a cluster's side by side)."""

import statistics
import sys

from budget import budget_table, cpu_line, percentile
from starts import spread, start_lines, start_part

# (yardstick, contenders measured between its runs, label of the table, goal of the ratio)
GROUPS = (("bare", ("plain", "dedup")), ("bare publish", ("publish",)), ("healthy", ("sibling",)),
          ("healthy quorum", ("sibling quorum",)))
GOALS = {"plain": 1.0, "dedup": 0.75, "publish": 0.95, "sibling": 0.9, "sibling quorum": 0.9}
LABELS = {"bare": "bare pika consume+ack", "plain": "svc, dedup off", "dedup": "svc, etcd dedup",
          "bare publish": "bare pika publisher, confirms", "publish": "svc.Publisher, confirms",
          "healthy": "svc healthy (dedup on)", "sibling": "svc, a dead sibling's claims",
          "healthy quorum": "svc healthy, quorum queue", "sibling quorum": "svc, dead sibling, quorum"}
BUDGETED = ("bare", "plain", "dedup")   # the contenders whose CPU per event is read, by process


def chosen(only: list[str] | None) -> tuple:
    """The groups that ``only`` names (by their yardstick or one of their contenders; all if None)."""
    return tuple(group for group in GROUPS if not only or {group[0], *group[1]} & set(only))


def ratio(figures: tuple) -> float:
    """A contender's rate over the mean of the yardstick runs before and after it."""
    rate, before, after, _ = figures
    return rate / ((before + after) / 2)


def print_round(tag: str, load: tuple, result: dict, started: dict, budgets: dict) -> None:
    parts = []
    for name, figures in result.items():
        rate, before, after, pause = figures
        verdict = "ok" if ratio(figures) >= GOALS[name] else "BELOW GOAL"
        paused = "" if pause is None else f", longest pause {pause * 1000:.0f} ms"
        parts.append(f"{name} {rate:.0f} ({ratio(figures):.2f}x of {before:.0f}|{after:.0f}, {verdict}{paused})")
    print(f"{tag} (load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}): {'; '.join(parts + start_part(started))}\n"
          f"  CPU µs/event, all processes [the consumer's; etcd's]: {cpu_line(budgets)}", file=sys.stderr, flush=True)


def side_by_side(single: dict, clustered: dict) -> None:
    """One line per contender: the median ratio (and lowest) on the single node and on the cluster;
    then the CPU µs per event of all processes and the latencies."""
    print(f"\n{'median ratio [lowest]':32} {'single node':>16} {'cluster':>16}   goal")
    for _, names in single["groups"]:
        for name in names:
            cells = []
            for counted in (single["counted"], clustered["counted"]):
                each = [ratio(result[name]) for result in counted]
                cells.append(f"{statistics.median(each):.2f}x [{min(each):.2f}x]")
            print(f"{LABELS[name]:32} {cells[0]:>16} {cells[1]:>16}   >= {GOALS[name]:.2f}x")
    if not single["latency"]:
        return   # --only: no budgets, starts nor latencies
    for name in BUDGETED:
        cells = [f"{statistics.median(sum(run.values()) for run in one['budgets'][name]):.0f} µs" for one in
                 (single, clustered)]
        print(f"{'CPU/event, ' + LABELS[name]:32} {cells[0]:>16} {cells[1]:>16}")
    for name in ("plain", "dedup"):
        cells = [f"{percentile(one['latency'][name], 0.5):.1f}|{percentile(one['latency'][name], 0.99):.1f} ms"
                 for one in (single, clustered)]
        print(f"{'p50|p99 latency, ' + LABELS[name]:32} {cells[0]:>16} {cells[1]:>16}")
    cells = [f"{one['round_trip']:.2f} ms" for one in (single, clustered)]
    print(f"{'one etcd round trip':32} {cells[0]:>16} {cells[1]:>16}")


def report(args, run: dict) -> None:
    counted, starts, imported = run["counted"], run["starts"], run["imported"]
    print(f"{args.events} events per run ({args.sibling_events} for the dead sibling), prefetch {args.prefetch}, "
          f"{len(counted)} rounds counted after {args.warmup} warm-up; each ratio: the contender over the mean of its "
          "yardstick's runs just before and after it [every round]")
    for yardstick, names in run["groups"]:
        rates = sorted({figures[i] for result in counted for name in names for i in (1, 2)
                        for figures in [result[name]]})
        print(f"{LABELS[yardstick]:32} {statistics.median(rates):9.0f} events/s   yardstick, "
              f"{min(rates):.0f}-{max(rates):.0f} over {len(rates)} runs")
        for name in names:
            each = [ratio(result[name]) for result in counted]
            verdict = "every round meets it" if min(each) >= GOALS[name] else "NOT every round meets it"
            print(f"{LABELS[name]:32} {statistics.median([result[name][0] for result in counted]):9.0f} events/s   "
                  f"median {statistics.median(each):.2f}x, lowest {min(each):.2f}x  (goal >= {GOALS[name]:.2f}x: "
                  f"{verdict})  {spread(each, '{:.2f}x')}")
    if not run["latency"]:
        return   # --only: no budgets, starts nor latencies
    print("\n".join(start_lines(starts, imported)))
    print(budget_table(run["budgets"], LABELS))
    latency = run["latency"]
    for name in ("plain", "dedup"):
        print(f"{'publish to effect, ' + LABELS[name]:32} p50 {percentile(latency[name], 0.5):6.2f} ms, p99 "
              f"{percentile(latency[name], 0.99):6.2f} ms  ({len(latency[name])} lone events)")
    print(f"{'one etcd round trip':32} {run['round_trip']:6.2f} ms  (a one-key transaction, median; one before "
          "each lone event)")


