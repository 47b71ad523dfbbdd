"""The tables of bench/bench_svc.py: its groups of contenders, their goals, and what it prints
(each round as it ends, a run's table, a single node's and a cluster's side by side)."""

import statistics
import sys

from budget import budget_table, cpu_line, percentile
from siblings import Pair
from starts import spread, start_lines, start_part

# (yardstick, contenders measured between its runs, label of the table, goal of the ratio)
GROUPS = (("bare", ("plain", "dedup")), ("bare publish", ("publish",)), ("healthy", ("sibling",)),
          ("healthy quorum", ("sibling quorum",)))
GOALS = {"plain": 1.0, "dedup": 0.75, "publish": 0.95, "sibling": 0.9, "sibling quorum": 0.9}
# Measured after the other rounds, once the starts' done ids are in etcd (bench_svc.bench): dedup on an
# etcd as a busy service's is after a day, beside its own bare loop (a yardstick name of its own, so the
# two sets of bare runs are never mixed). The goal is the same as dedup's.
BUSY = (("bare again", ("dedup busy",)),)
GOALS["dedup busy"] = GOALS["dedup"]
# The groups measured in pairs (bench/siblings.py), by yardstick: the name of their A/A control (a
# healthy service against its healthy twin, the same way; no goal: the method's own noise).
PAIRED = {"healthy": "control", "healthy quorum": "control quorum"}
LABELS = {"bare": "bare pika consume+ack", "plain": "svc, dedup off", "dedup": "svc, etcd dedup",
          "bare publish": "bare pika publisher, confirms", "publish": "svc.Publisher, confirms",
          "healthy": "svc healthy (dedup on)", "sibling": "svc, a dead sibling's claims",
          "healthy quorum": "svc healthy, quorum queue", "sibling quorum": "svc, dead sibling, quorum",
          "control": "A/A control, healthy|healthy", "control quorum": "A/A control, quorum",
          "bare again": "bare pika, beside done ids", "dedup busy": "svc, dedup, busy etcd"}
BUDGETED = ("bare", "plain", "dedup", "dedup busy")   # the contenders whose CPU per event is read, by process


def chosen(only: list[str] | None) -> tuple:
    """The groups that ``only`` names (by their yardstick or one of their contenders; all if None)."""
    return tuple(group for group in GROUPS if not only or {group[0], *group[1]} & set(only))


def members(yardstick: str, names: tuple) -> tuple:
    """A group's contenders, and its A/A control if it is measured in pairs."""
    return (*names, PAIRED[yardstick]) if yardstick in PAIRED else names


def ratio(figures: tuple) -> float:
    """A contender's rate over the mean of the yardstick runs before and after it; of a pair
    (siblings.Pair), over its twin's rate in the same seconds."""
    if isinstance(figures, Pair):
        return figures.ratio
    rate, before, after, _ = figures
    return rate / ((before + after) / 2)


def verdict(name: str, ratios: list[float], every: bool = False) -> str:
    """Whether ``ratios`` all meet ``name``'s goal; an A/A control's widest distance from 1.0x."""
    if name not in GOALS:
        return f"A/A: within {max(abs(1 - each) for each in ratios):.2f} of 1.00x"
    met = min(ratios) >= GOALS[name]
    if not every:
        return "ok" if met else "BELOW GOAL"
    return f"goal >= {GOALS[name]:.2f}x: {'every round meets it' if met else 'NOT every round meets it'}"


def figures_part(name: str, figures: tuple) -> str:
    """One contender's figures of a round: its rate (events/s), its ratio, what it is a ratio of."""
    if isinstance(figures, Pair):
        return (f"{name} {figures.rate:.0f} ({figures.ratio:.2f}x of its twin's {figures.twin:.0f} in the same "
                f"{figures.seconds:.1f} s, {verdict(name, [figures.ratio])}, "
                f"longest pause {figures.pause * 1000:.0f} ms{_split(figures)})")
    rate, before, after, pause = figures
    paused = "" if pause is None else f", longest pause {pause * 1000:.0f} ms"
    judged = verdict(name, [ratio(figures)])
    return f"{name} {rate:.0f} ({ratio(figures):.2f}x of {before:.0f}|{after:.0f}, {judged}{paused})"


def _split(pair: Pair) -> str:
    """Where a pair's ratio came from: its first seconds and the rest (siblings.HEAD_SECONDS)."""
    if pair.head is None or pair.rest is None:
        return ""
    return f", {pair.head:.2f}x in its first seconds, {pair.rest:.2f}x after"


def print_round(tag: str, load: tuple, result: dict, started: dict, budgets: dict, end: float | None = None) -> None:
    """One round's figures as it ends: ``load`` the load averages (1, 5, 15 min) at its start,
    ``end`` the 1-minute one at its end."""
    parts = [figures_part(name, figures) for name, figures in result.items()]
    ended = "" if end is None else f", {end:.1f} at its end"
    print(f"{tag} (load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}{ended}): {'; '.join(parts + start_part(started))}\n"
          f"  CPU µs/event, all processes [the consumer's; etcd's]: {cpu_line(budgets)}", file=sys.stderr, flush=True)


def yardstick_rates(figures: tuple) -> tuple:
    """The yardstick's rates (events/s) a contender's ratio was taken against: the runs before and
    after it, or its twin's in a pair."""
    return (figures.twin,) if isinstance(figures, Pair) else figures[1:3]


def side_by_side(single: dict, clustered: dict) -> None:
    """One line per contender: the median ratio (and lowest) on the single node and on the cluster;
    then the CPU µs per event of all processes and the latencies."""
    print(f"\n{'median ratio [lowest]':32} {'single node':>16} {'cluster':>16}   goal")
    for yardstick, names in single["groups"]:
        for name in members(yardstick, names):
            cells = []
            for counted in (single["counted"], clustered["counted"]):
                each = [ratio(result[name]) for result in counted]
                cells.append(f"{statistics.median(each):.2f}x [{min(each):.2f}x]")
            goal = f">= {GOALS[name]:.2f}x" if name in GOALS else "A/A: 1.00x"
            print(f"{LABELS[name]:32} {cells[0]:>16} {cells[1]:>16}   {goal}")
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
          "yardstick's runs just before and after it, or (the dead sibling's, paired) over its healthy twin's rate "
          "in the same seconds, both draining at once [every round]")
    for yardstick, names in run["groups"]:
        rates = sorted({rate for result in counted for name in members(yardstick, names)
                        for rate in yardstick_rates(result[name])})
        role = "twin, at once" if yardstick in PAIRED else "yardstick"
        print(f"{LABELS[yardstick]:32} {statistics.median(rates):9.0f} events/s   "
              f"{role}, {min(rates):.0f}-{max(rates):.0f} over {len(rates)} runs")
        for name in members(yardstick, names):
            each = [ratio(result[name]) for result in counted]
            print(f"{LABELS[name]:32} {statistics.median([result[name][0] for result in counted]):9.0f} events/s   "
                  f"median {statistics.median(each):.2f}x, lowest {min(each):.2f}x  ({verdict(name, each, every=True)})"
                  f"  {spread(each, '{:.2f}x')}")
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


