"""The processor's own CPU cost per event, this checkout's svc against a baseline's, in one run.

    .venv/bin/python bench/bench_processor.py --baseline main [--rounds 15] [--windows 400] [--window 50]

Each round runs, in a fresh interpreter per checkout (alternating which goes first), windows of
``--window`` new_order events through ``svc.processor.Processor`` with a deduplication that
answers at once (off: every event processed; on: every event claimed, then committed) and a meter
that keeps counts in memory: no broker, no etcd, so what is timed is parsing, the window's logic,
the hooks and the metrics. CPU time of the process (``time.process_time``), microseconds per
event; the ratio this checkout / baseline per round, and its median, are printed.
"""

import argparse
import statistics
from pathlib import Path

from bench_compare import ROOT, alternating, child_figures
from bench_svc import spread

CHILD = r'''
import json, sys, time
from svc.batch import Ready, Verdict
from svc.processor import Processor

class Dedup:
    on_release = None
    def __init__(self, enabled):
        self.enabled = enabled
    def claim(self, events):
        return Ready([Verdict.CLAIMED] * len(events))
    def commit(self, events):
        return Ready([Verdict.OK] * len(events))
    def release(self, events):
        pass
    def claim_key(self, event):
        return event.id.encode()

class Meter:
    def __init__(self):
        self.counts, self.timings = {}, []
    def incr(self, name, count=1):
        self.counts[name] = self.counts.get(name, 0) + count
    def timing(self, name, ms):
        self.timings.append((name, ms))
    def flush(self):
        self.counts.clear(); self.timings.clear()

windows, size = int(sys.argv[1]), int(sys.argv[2])
results = []
for enabled in (False, True):
    processor = Processor("orders", Dedup(enabled), Meter())
    batches = [[json.dumps({"type": "new_order", "id": f"w{w}-{i}", "args": {"sku": "talk-tshirt", "qty": 1}}).encode()
                for i in range(size)] for w in range(windows)]
    for bodies in batches[:20]:
        processor.process(bodies)   # warm-up
    started = time.process_time()
    for bodies in batches:
        processor.process(bodies)
    results.append((time.process_time() - started) / (windows * size) * 1e6)
print(*results)
'''


def run(folder: Path, windows: int, size: int) -> tuple[float, float]:
    """(µs per event with dedup off, with dedup on) of the svc in ``folder``, in a fresh interpreter."""
    off, on = child_figures(folder, CHILD, str(windows), str(size))
    return off, on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, metavar="REF", help="git ref (or folder with svc/) to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--windows", type=int, default=400, help="windows per measurement")
    parser.add_argument("--window", type=int, default=50, help="events per window (PREFETCH / 2)")
    args = parser.parse_args()
    runs = alternating(args.baseline, args.rounds, lambda folder: run(folder, args.windows, args.window), ("off", "on"))
    print(f"svc.processor.Processor, {args.windows} windows of {args.window} events, {args.rounds} rounds, "
          f"CPU µs per event (median [each round]); this checkout ({ROOT}) vs {args.baseline}")
    for kind, label in (("off", "dedup off"), ("on", "dedup on (all claimed)")):
        ratios = [mine / base for mine, base in zip(runs[kind], runs[kind + "@base"], strict=True)]
        print(f"  {label:24} this {statistics.median(runs[kind]):6.2f}  {args.baseline} "
              f"{statistics.median(runs[kind + '@base']):6.2f}  ratio {statistics.median(ratios):.3f}x  "
              f"{spread(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
