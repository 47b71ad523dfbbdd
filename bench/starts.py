"""The start of ``python -m svc`` with many done ids in etcd: seconds to consuming and peak memory.

Used by bench/bench_svc.py and bench/bench_compare.py:

- :func:`add_done_ids` writes a service's done marks (transactions of 128 puts, 16 in flight) on
  one lease, and :func:`drop` revokes it, waiting out etcd's "request timed out" while it deletes
  a million keys;
- :func:`startup` times one start (seconds from spawning to its consumer on the queue) and reads
  its peak resident memory (VmHWM, MB) once its import of done ids ended;
- :data:`START_GOALS` and :func:`start_lines` judge and print them.
"""

import statistics
import sys
import time
from pathlib import Path

from svc import etcd as _etcd, keys, topology
from svc.errors import DedupUnavailable
from nirvana.testing import World, wait_for

START_GOALS = {100000: (1.5, None), 1000000: (3.0, 100.0)}   # done ids: (seconds, MB) at most


def add_done_ids(world: World, service: str, done_ids: int) -> int:
    """Put ``done_ids`` done marks of ``service`` in etcd, on a lease (returned) that ends them
    (transactions of 128 puts, 16 in flight)."""
    lease = world.etcd.grant(3600)
    base = keys.dedup_prefix(world.prefix, service)
    value = f"done {'0' * 32}".encode()
    in_flight = []
    for start in range(0, done_ids, 128):
        request = _etcd.new_txn()
        for i in range(start, min(start + 128, done_ids)):
            _etcd.add_put(request.success, f"{base}{keys.encode_id(f'done-{i}')}".encode(), value, lease)
        in_flight.append(world.etcd.txn_async(request))
        if len(in_flight) >= 16:
            in_flight.pop(0).result()
    for pending in in_flight:
        pending.result()
    return lease


def drop(world: World, lease: int, service: str) -> None:
    """Revoke add_done_ids' ``lease``. etcd may answer "request timed out" while it deletes a
    million keys with it: then wait (up to 300 s) for them to be gone (WaitTimeout after that)."""
    try:
        world.etcd.revoke(lease)
    except DedupUnavailable as error:
        print(f"{error}; waiting for the done ids to go", file=sys.stderr, flush=True)
        base = keys.dedup_prefix(world.prefix, service)
        wait_for(lambda: _counted(world, base) == 0, "the done ids deleted with their lease", timeout=300, interval=2)


def _counted(world: World, prefix: str) -> int | None:
    try:
        return world.etcd.count_prefix(prefix)
    except DedupUnavailable:
        return None   # etcd still busy deleting


def peak_rss(pid: int) -> float:
    """A live process's peak resident memory so far (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def startup(world: World, service: str, **code) -> tuple[float, float, str]:
    """Seconds from spawning the service to its consumer on the queue, its peak resident memory (MB)
    once its import of done ids ended, and its last log line on them (no deadline short of 120 s:
    the slow start is measured)."""
    # Its queue lives only while it is measured: left bound, it would collect every other run's events.
    topology.declare(world.channel(), world.exchange, services=(service,), **world.queue_arguments)
    started = time.perf_counter()
    [process] = world.start(service, enable_etcd=True, log_level="INFO", wait=False, **code)
    world.wait_consumers(service, 1, [process], timeout=120)
    elapsed = time.perf_counter() - started
    # its import may go on while it consumes: the peak counts once it has said how it ended
    wait_for(lambda: "imported" in process.log(), "its import of done ids to end", timeout=120, interval=0.1)
    peak = peak_rss(process.pid)
    assert process.stop() == 0   # its import may end after it consumes: its last word on it is read once stopped
    line = next((line for line in reversed(process.log().splitlines()) if "done ids" in line), "")
    world.channel().queue_delete(world.queue(service))
    return elapsed, peak, line.split(": ", 1)[-1]


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"[{' '.join(fmt.format(value) for value in values)}]"


def start_part(started: dict[int, tuple[float, float]]) -> list[str]:
    """One round's starts, {done ids: (seconds, peak MB)}, as parts of its line."""
    return [f"start with {done_ids} done ids {seconds:.2f} s, {peak:.0f} MB"
            for done_ids, (seconds, peak) in started.items()]


def start_lines(starts: list[dict], imported: dict[int, str]) -> list[str]:
    """The table's lines on the starts: each counted round's {done ids: (seconds, peak MB)}, judged
    against :data:`START_GOALS` in every round, and each start's last log line on its import."""
    lines = []
    for done_ids in starts[0]:
        seconds, peaks = [start[done_ids][0] for start in starts], [start[done_ids][1] for start in starts]
        most, mb = START_GOALS.get(done_ids, (None, None))
        goal = ", ".join(([f"<= {most:g} s"] if most else []) + ([f"<= {mb:g} MB"] if mb else [])) or "none"
        met = (not most or max(seconds) <= most) and (not mb or max(peaks) <= mb)
        lines.append(f"{'start to consuming, ' + str(done_ids) + ' done':32} {statistics.median(seconds):9.2f} s, peak "
                     f"{statistics.median(peaks):.0f} MB   (goal {goal}: "
                     f"{'every round meets it' if met else 'NOT every round'}) {spread(seconds, '{:.2f}')} s "
                     f"{spread(peaks)} MB")
        lines.append(f"  service log (last round): {imported[done_ids]}")
    return lines
