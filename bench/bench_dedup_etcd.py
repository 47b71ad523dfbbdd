"""etcd's and the client's CPU per event of deduplication alone, this checkout's svc against a baseline's.

    ip netns exec NAME .venv/bin/python bench/bench_dedup_etcd.py --baseline main [--rounds 6] [--windows 40] [--window 500]

Each round runs, in a fresh interpreter per checkout (alternating which goes first), ``--windows``
windows of ``--window`` new events through ``svc.dedup.EtcdDedup`` against the stack's etcd (claim,
wait, commit, wait; its watch and lease keepalive running as in svc), no broker: what is timed
is what deduplication costs etcd (its process's CPU, every thread) and the client (this process's
CPU, svc's request building and reading included), microseconds per event; a fresh key prefix
per run, deleted after it. Raises LookupError if nothing listens on the etcd port here.
"""

import argparse
import statistics
from pathlib import Path

from bench_compare import ROOT, alternating, child_figures
from bench_svc import spread

CHILD = r'''
import json, sys, time, uuid
import psutil
from svc import etcd as _etcd
from svc.config import parse_endpoints
from svc.dedup import EtcdDedup
from svc.event import parse

endpoint, windows, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
port = int(endpoint.rsplit(":", 1)[1])
pids = [c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid]
if not pids:
    raise LookupError(f"nothing listens on port {port} here: is the stack up in this namespace?")
etcd, me = psutil.Process(pids[0]), psutil.Process()
client = _etcd.Etcd(parse_endpoints(endpoint), timeout=10)
prefix = f"/bench-dedup-{uuid.uuid4().hex[:8]}"
dedup = EtcdDedup(client, prefix, "orders", claim_ttl=30, retention=600)
dedup.open()
bodies = [[json.dumps({"type": "new_order", "id": f"w{w}-{i}", "args": {"sku": "talk-tshirt", "qty": 1}}).encode()
           for i in range(size)] for w in range(windows)]

def cpu(process):
    times = process.cpu_times()
    return times.user + times.system

try:
    etcd_before, mine_before = cpu(etcd), cpu(me)
    for window in bodies:
        events = [parse(body) for body in window]
        assert {v.value for v in dedup.claim(events).result()} == {"claimed"}
        assert {v.value for v in dedup.commit(events).result()} == {"ok"}
    events = windows * size
    print((cpu(etcd) - etcd_before) * 1e6 / events, (cpu(me) - mine_before) * 1e6 / events)
finally:
    dedup.close()
    client.delete_prefix(prefix + "/")
    client.close()
'''


def run(folder: Path, endpoint: str, windows: int, size: int) -> tuple[float, float]:
    """(etcd's µs per event, the client's) of the svc in ``folder``, in a fresh interpreter."""
    etcd, client = child_figures(folder, CHILD, endpoint, str(windows), str(size))
    return etcd, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, metavar="REF", help="git ref (or folder with svc/) to compare with")
    parser.add_argument("--etcd", default="127.0.0.1:2379", help="the etcd endpoint (host:port) of this namespace")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--windows", type=int, default=40, help="windows per measurement")
    parser.add_argument("--window", type=int, default=500, help="events per window (svc: PREFETCH / 3)")
    args = parser.parse_args()
    runs = alternating(args.baseline, args.rounds, lambda folder: run(folder, args.etcd, args.windows, args.window),
                       ("etcd", "client"))
    print(f"svc.dedup.EtcdDedup claim + commit, {args.windows} windows of {args.window} events, {args.rounds} rounds, "
          f"CPU µs per event (median [each round]); this checkout ({ROOT}) vs {args.baseline}")
    for kind in ("etcd", "client"):
        ratios = [mine / base for mine, base in zip(runs[kind], runs[kind + "@base"], strict=True)]
        print(f"  {kind:7} this {statistics.median(runs[kind]):6.1f} {spread(runs[kind], '{:.1f}')}  {args.baseline} "
              f"{statistics.median(runs[kind + '@base']):6.1f} {spread(runs[kind + '@base'], '{:.1f}')}  "
              f"ratio {statistics.median(ratios):.3f}x  {spread(ratios, '{:.3f}')}")


if __name__ == "__main__":
    main()
