"""Process supervision, once for the whole kit: record, recognise, stop a process group.

The starting itself is :mod:`nirvana.launcher`'s; this module keeps what it and the services'
records share.

Everything the kit starts (the stack's components, JupyterLab, the ``svc`` services) runs in its
own session, so its process group id is its pid and one signal reaches the whole group (a
gunicorn and its workers, a ``sh -c ... exec`` and what it became). Each start is recorded as a
JSON object with at least ``pid`` and ``started`` (the process's start time, seconds since the
epoch as psutil reports it) so that a later interpreter can find it again and a pid reused by
another program is never taken for ours.

Stopping is SIGTERM to each group, a shared deadline, SIGKILL to what is left (POSIX
``killpg(2)``); a zero timeout is a crash: SIGKILL at once.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil

from ._wait import poll, quiet
from .errors import WaitTimeout

# psutil derives a start time from the boot time in /proc/stat, which moves by up to a second
# when the clock is adjusted; the kernel does not hand a freed pid out again within that time
# (pids are allocated cyclically up to pid_max).
SAME_START = 0.5    # seconds: a recorded start time matches the live process's
KILL_WAIT = 2.0     # seconds for the kernel to finish a SIGKILL
POLL = 0.05         # seconds between looks at a group that is stopping


def alive(process: psutil.Process) -> bool:
    """Running, or a zombie whose other threads still run.

    An exited process whose parent has not reaped it yet holds no port and no file, so it counts as
    stopped — but only once its whole thread group has ended: a leader whose own thread ended first
    shows as a zombie while its other threads still exit and still hold its sockets, with no pid the
    port's holder can be found by (Linux keeps a thread-group leader a zombie until its last thread
    has exited: ``delay_group_leader`` in kernel/exit.c). Seen with node's statsd after SIGTERM.
    """
    try:
        return process.is_running() and (process.status() != psutil.STATUS_ZOMBIE or process.num_threads() > 1)
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (non-zombie) processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and alive(process):
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of this process (no zombie left in a long kernel)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


PDEATHSIG_PROGRAM = "setpriv"   # util-linux's setpriv(1) (>= 2.33): "--pdeathsig KILL", then exec


@functools.cache   # one PATH lookup per interpreter: is_svc asks for every process it reads
def death_signal() -> list[str]:
    """The argv prefix that has Linux SIGKILL a child when the thread that started it ends:
    ``["setpriv", "--pdeathsig", "KILL", "--"]`` (prctl(2) PR_SET_PDEATHSIG, set by util-linux's
    setpriv(1) before it execs the command; the setting survives that exec). [] off Linux or
    where setpriv is missing (atexit's stop remains).

    For the services a notebook kernel starts: Jupyter gives a kernel that it shuts down or restarts
    a few seconds for atexit's graceful stop and then kills it, and a busy service (WORK_MS) would
    outlive it. SIGKILL is the crash the talk demonstrates anyway: events not acked go back to the
    queue. The signal follows the *thread* that started the child: the kit starts services from the
    kernel's main thread (cells and widget clicks run there).

    Why a program and not a ``preexec_fn`` calling prctl: a ``preexec_fn`` makes CPython fork()
    the whole kernel (no vfork) and run the at-fork handlers in the child, and gRPC's (the kernel's
    etcd client) restart its poller threads there; the child then closes every inherited file
    before its exec, the restarted poller's epoll_wait meets a closed descriptor and gRPC aborts
    the child (SIGABRT, status -6: grpc/grpc#43055, grpcio 1.80 to at least 1.85; Python's
    subprocess documentation also warns that ``preexec_fn`` is not safe with threads). Without
    one, CPython vforks and no handler runs. What is given up: a kernel that dies in the moment
    between the exec of setpriv and its prctl (a few milliseconds) leaves its service
    running (the old hook checked the parent pid after prctl); the next chapter's ``reset()`` or
    ``./kit down`` stops it from its record. Until setpriv execs the command, the child's command
    line is setpriv's (:func:`command_of`): measured from the start's return to the command's exec,
    median 18 ms and up to 0.3 s on a 2-core machine at a load average of 15.
    """
    if not sys.platform.startswith("linux"):
        return []
    program = shutil.which(PDEATHSIG_PROGRAM)
    return [program, "--pdeathsig", "KILL", "--"] if program else []   # callers copy it, never change it


def command_of(argv: list[str]) -> list[str]:
    """``argv`` without a :func:`death_signal` prefix: what a process started under setpriv(1) runs,
    or is about to run (between setpriv's start and its exec its command line is setpriv's). An
    empty ``argv`` stays empty: a live process reads so for a moment inside execve(2)."""
    prefix = death_signal()
    return argv[len(prefix):] if prefix and argv[:len(prefix)] == prefix else argv


def started_at(pid: int) -> float:
    """The start time of ``pid`` (seconds since the epoch) as recorded with it."""
    return psutil.Process(pid).create_time()


def write_record(path: Path, record: Mapping[str, object]) -> None:
    """Write a start record (``pid``, ``started`` and the owner's fields) atomically.

    Each writer goes through a temporary file of its own beside ``path`` (two writers sharing one
    name would rename it from under each other: FileNotFoundError), then renames it over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as tmp:
        tmp.write(json.dumps(dict(record)))
    try:
        os.replace(tmp.name, path)
    except OSError:
        os.unlink(tmp.name)
        raise


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None when it is missing or unreadable.

    A pid file written before the kit had one format calls the start time ``create_time``.
    """
    try:
        record = json.loads(path.read_text())
        if "started" not in record and "create_time" in record:
            record["started"] = record["create_time"]
        record.pop("create_time", None)
        return record if isinstance(record.get("pid"), int) and "started" in record else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def recorded_process(record: Mapping[str, object],
                     is_ours: Callable[[psutil.Process], bool] = alive) -> psutil.Process | None:
    """The live process a record names, or None when it exited or the pid now belongs to another
    program (another start time, or ``is_ours`` says no)."""
    try:
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["started"])) < SAME_START and is_ours(process):
            return process
    except (psutil.Error, KeyError, TypeError, ValueError):
        pass
    return None


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the whole group; a group already gone is no error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_group(pgid: int, deadline: float, reaper: Callable[[int], None] = reap) -> bool:
    """Wait until no process of group ``pgid`` is left (``time.monotonic()`` ``deadline``).

    ``reaper(pgid)`` collects the leader if it is a child of ours. False at the deadline.
    """
    def left() -> int:
        reaper(pgid)
        return len(group_members(pgid))

    try:
        poll(left, lambda count: count == 0, what=f"process group {pgid} to end",
             timeout=max(deadline - time.monotonic(), 0), progress=quiet, interval=POLL)
    except WaitTimeout:
        return False
    reaper(pgid)   # it may have turned zombie after the last look: collect it now
    return True


def stop_groups(pgids: Iterable[int], timeout: float, *, kill_wait: float = KILL_WAIT,
                reaper: Callable[[int], None] = reap) -> dict[int, str]:
    """SIGTERM each group, wait up to ``timeout`` seconds for all together, SIGKILL what is left.

    ``timeout=0`` is a crash: SIGKILL at once. Returns how each group ended, ``"stopped"`` or
    ``"killed"``, by group id. Waits at most ``timeout + kill_wait`` seconds per group left.
    """
    pgids = list(pgids)
    for pgid in pgids:
        signal_group(pgid, signal.SIGTERM if timeout > 0 else signal.SIGKILL)
    deadline = time.monotonic() + timeout
    ended = {}
    for pgid in pgids:
        how = "stopped" if timeout > 0 else "killed"
        if not wait_group(pgid, deadline, reaper):
            signal_group(pgid, signal.SIGKILL)
            how = "killed"
            wait_group(pgid, time.monotonic() + kill_wait, reaper)
        ended[pgid] = how
    return ended
