"""The chaos proof at full size: chapter 7's harness with 100,000 ids and at least 50 SIGKILLs.

    .venv/bin/python bench/chaos.py [--events 100000] [--kills 50] [--control] [--broker-restart] [--lost-handshakes]

Needs the stack (``./kit up``: RabbitMQ; etcd on PATH for the run's throwaway etcd, rabbitmqctl
for the connection cut). The run has its own exchange, etcd and kit state folder (NIRVANA_STATE),
so it neither touches nor is touched by notebooks running meanwhile. Prints the faults as they
strike, the checker's table per service, the SIGKILL count, the run time and the drain time
(from the last event published to every id processed). ``--control`` runs the same workload
again with deduplication off, where the checker must report duplicates. ``--broker-restart`` adds
a restart of the kit's own RabbitMQ node (never one found running: run it where `./kit up` started
its own, e.g. a network namespace), ``--lost-handshakes`` puts the services behind a proxy that
cuts their connections, then loses their handshakes for a few seconds. Exit status 0 when the
claims run is ok (every id once, no replica exited by itself; and the control run fails on
duplicates, if asked), 1 otherwise.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nirvana import chaos, stack  # noqa: E402

EVENTS = 100_000
KILLS = 50


def show(name: str, report: chaos.Report) -> None:
    print(f"\n{name}: {report.published_events} events published ({report.plan.events} ids), "
          f"{report.sigkills} SIGKILLs, crash points reached: {', '.join(report.crash_points) or 'none'}")
    print(report.table())
    for fault in report.faults:
        if "RabbitMQ" in fault or "proxy" in fault:
            print(f"fault: {fault}")
    print(f"replicas that exited by themselves: {len(report.exits)}")
    for line in report.exits:
        print(f"  {line}")
    print(f"run {report.run_seconds:.1f} s, drain {report.drain_seconds:.1f} s "
          f"({report.plan.events / max(report.drain_seconds, 1e-9):,.0f} ids/s per service while draining)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS, help="distinct ids (10%% published twice)")
    parser.add_argument("--kills", type=int, default=KILLS, help="SIGKILLs in all, crash points included")
    parser.add_argument("--control", action="store_true", help="run again with dedup off")
    parser.add_argument("--broker-restart", action="store_true", help="restart the kit's own RabbitMQ node mid-run")
    parser.add_argument("--lost-handshakes", action="store_true",
                        help="services behind a proxy that cuts them, then loses their handshakes for a while")
    args = parser.parse_args(argv)
    if args.events < 1 or args.kills < 4:
        parser.exit(2, "bench/chaos.py: --events must be 1 or more and --kills 4 or more\n")
    node = stack.rabbitmq_node()   # found in the kit's state folder, before the run moves it
    os.environ["NIRVANA_STATE"] = tempfile.mkdtemp(prefix="nirvana-chaos-state-")
    plan = chaos.Plan(events=args.events, kills=args.kills, drain_timeout=max(120.0, args.events / 50),
                      broker_restart=args.broker_restart, lost_handshakes=args.lost_handshakes)
    report = chaos.run(plan, node=node)
    show("claims", report)
    ok = report.ok
    if args.control:
        control = chaos.run(chaos.without_dedup(plan), node=node)
        show("dedup off (control)", control)
        # the control must fail on duplicates, not on a replica that exited
        ok = ok and not control.ok and not control.exits and any(row.duplicated for row in control.rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
