"""A watchdog that stops throwaway infrastructure when the process that started it dies, however.

A notebook kernel (or a test run) that starts a throwaway etcd or a private cluster stops it in
``close()`` and at interpreter exit (``atexit``). A kernel that is SIGKILLed, restarted while
hung, or crashes runs neither, and its members would keep their ports, memory and folders. So
the owner starts a :class:`Watchdog` first: a small process of its own session (a signal to the
kernel's group does not reach it) whose stdin is a pipe from the owner. The owner tells it what
to stop; when that pipe reaches end-of-file without a goodbye (Linux closes every file of a
process that ends, whatever ended it), the watchdog stops every group it was told about
(SIGTERM, SIGKILL after a deadline: the whole process group, so a shell script's children and
the epmd a RabbitMQ node started go too) and removes the folders it was told about.

Why not ``prctl(PR_SET_PDEATHSIG)`` on each member (as the services have, nirvana/processes.py):
it fires on the death of the starter *thread*, is cleared in the member's own children
(``rabbitmq-server`` is a shell whose ``beam.smp`` and epmd are grandchildren), and removes no
folder. One watchdog per owner follows whole groups and the files too. Its one blind spot: a
child the owner forks without exec (``os.fork``, multiprocessing's fork) holds the pipe open,
so the watchdog acts when that child ends too.

The protocol, one line each on the watchdog's stdin (a path may hold spaces, not newlines):
``group <pgid> <started>`` stop that process group (``started``: its leader's start time, so a
reused pid is never signalled); ``records <folder>`` stop the group of each start record
``<folder>/*.pid`` (JSON ``{"pid", "started"}``, the kit's records: nirvana/processes.py) found
then; ``remove <folder>`` delete it after the stop; ``done`` the owner cleaned up: exit, stop
nothing. The watchdog answers ``ready`` once, when it listens.

The watchdog runs as ``python -I nirvana/watchdog.py`` (standard library and psutil only: it
starts in a fraction of a second and imports nothing of the project).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

STOP_TIMEOUT = 10.0     # seconds for the groups to end on SIGTERM before SIGKILL
KILL_WAIT = 5.0         # seconds for the kernel to finish a SIGKILL
READY_TIMEOUT = 10.0    # seconds for a new watchdog to answer
EXIT_TIMEOUT = 5.0      # seconds for a dismissed watchdog to exit
SAME_START = 0.5        # seconds: a recorded start time matches the live process's (psutil's rounding)
POLL = 0.1              # seconds between looks at the groups that are stopping


class Watchdog:
    """The owner's end: ``group(pgid)``, ``records(folder)``, ``remove(folder)``, ``close()``.

    ``stop_timeout``: seconds the watchdog gives the groups after SIGTERM before SIGKILL.
    Raises RuntimeError (one line) when the watchdog does not start or has died.
    """

    def __init__(self, *, stop_timeout: float = STOP_TIMEOUT) -> None:
        # stdin: a pipe only this process holds (Python's pipes are not inherited by the
        # processes it starts later), so end-of-file means this process is gone
        self.process = subprocess.Popen([sys.executable, "-I", __file__, str(stop_timeout)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        ready, _, _ = select.select([self.process.stdout], [], [], READY_TIMEOUT)
        if not ready or self.process.stdout.readline() != b"ready\n":
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the watchdog did not start within {READY_TIMEOUT:g} s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _tell(self, line: str) -> None:
        try:
            self.process.stdin.write(f"{line}\n".encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RuntimeError(f"the watchdog {self.pid} is gone (exit status {self.process.poll()})") from None

    def group(self, pgid: int) -> None:
        """Stop process group ``pgid`` (a leader this process started) if this process dies."""
        self._tell(f"group {pgid} {_started(pgid) or ''}")

    def records(self, folder: Path | str) -> None:
        """Stop the group of each start record ``folder/*.pid`` found when this process dies."""
        self._tell(f"records {folder}")

    def remove(self, folder: Path | str) -> None:
        """Delete ``folder`` (after the stop) if this process dies."""
        self._tell(f"remove {folder}")

    def close(self) -> None:
        """The owner cleaned up itself: the watchdog exits without stopping anything (idempotent)."""
        if self.process.poll() is None:
            try:
                self._tell("done")
                self.process.stdin.close()
            except (RuntimeError, OSError):
                pass
            try:
                self.process.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            pipe.close()


# -- the watchdog process ---------------------------------------------------------------------

def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _ours(pgid: int, started: float | None) -> bool:
    """True while group ``pgid`` is still the one we were told about: its leader has the recorded
    start time, or the leader is gone (Linux hands out no pid still in use as a group id)."""
    now = _started(pgid)
    return now is None or (started is not None and abs(now - started) < SAME_START)


def _recorded(folder: Path) -> dict[int, float | None]:
    groups = {}
    for path in sorted(folder.glob("*.pid")):
        try:
            record = json.loads(path.read_text())
            groups[int(record["pid"])] = float(record["started"])
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return groups


def _live(pgids: set[int]) -> set[int]:
    """Those of ``pgids`` with a live process left: not a zombie, or a zombie leader whose other threads
    still run and hold its sockets (the rule of nirvana.processes.alive, written here again: this
    module imports nothing of the project)."""
    left = set()
    for process in psutil.process_iter(["status", "num_threads"]):
        try:
            pgid = os.getpgid(process.pid)
        except OSError:
            continue
        if pgid in pgids and (process.info["status"] != psutil.STATUS_ZOMBIE or (process.info["num_threads"] or 0) > 1):
            left.add(pgid)
    return left


def _wait(pgids: set[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` until no group of ``pgids`` has a live process; those left."""
    deadline = time.monotonic() + seconds
    while (pgids := _live(pgids)) and time.monotonic() < deadline:
        time.sleep(POLL)
    return pgids


def _signal(pgids: set[int], signum: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def stop(groups: dict[int, float | None], folders: list[Path], timeout: float) -> None:
    """SIGTERM each group still ours, SIGKILL what is left after ``timeout`` seconds (then up to
    KILL_WAIT more), then delete ``folders``."""
    pgids = {pgid for pgid, started in groups.items() if _ours(pgid, started)}
    _signal(pgids, signal.SIGTERM)
    _signal(pgids, signal.SIGCONT)   # a member frozen by SIGSTOP (a chapter's fault) acts on it now
    _signal(_wait(pgids, timeout), signal.SIGKILL)
    _wait(pgids, KILL_WAIT)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def main(timeout: float) -> None:
    """Read the owner's lines until ``done`` (exit) or end-of-file (the owner died: stop all)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C meant for the owner is not for us
    groups: dict[int, float | None] = {}
    record_folders: list[Path] = []
    folders: list[Path] = []
    print("ready", flush=True)
    for line in sys.stdin.buffer:
        word, _, argument = line.decode().rstrip("\n").partition(" ")
        if word == "done":
            return
        if word == "group":
            pgid, _, started = argument.partition(" ")
            groups[int(pgid)] = float(started) if started else None
        elif word == "records":
            record_folders.append(Path(argument))
        elif word == "remove":
            folders.append(Path(argument))
    for folder in record_folders:
        groups.update(_recorded(folder))
    stop(groups, folders, timeout)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else STOP_TIMEOUT)
