"""What the kit knows of its ``svc`` processes: start records, live replicas, their states.

Each start is recorded in ``state/services/<name>.json`` (:mod:`nirvana.processes` writes and
reads the record: pid and start time, plus the service's settings), so a later kernel can still
find and stop what an earlier one started: a record counts only while its pid is still that
very ``python -m svc`` process. The processes this interpreter started are kept here too, so
their exit status is collected (no zombie) and reported.

One service name, one set of processes, across kernels: whoever starts, stops or kills a service
first takes its lock, ``state/services/<name>.lock`` (:func:`exclusive`, an OS file lock that ends
with the process holding it), and holds it from the check "is it running?" to the record written
or deleted. Two kernels that start ``orders`` at the same moment thus take turns: the first
starts it, the second finds it running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import psutil

from svc.config import SERVICE_NAME_RE
from svc.topology import DEFAULT_EXCHANGE, DEFAULT_SERVICES

from . import paths, processes
from ._wait import Progress, quiet
from .errors import ServiceError

NAMES = DEFAULT_SERVICES                 # the talk's services
KIT_MARK = "NIRVANA_KIT_STATE"   # set in each service's environment: which kit state dir started it
KIT_NAME = "NIRVANA_SERVICE"     # and the kit's name for it (a rebuild's reader "billing-rebuild" serves billing)
LOCK_WAIT = 30.0     # seconds to wait for another kernel's start or stop: a start's 10 s, a stop's 10 s
LOCK_POLL = 0.05     # seconds between tries of a lock another process holds


@dataclass(frozen=True)
class Service:
    """One running ``python -m svc`` process as the kit recorded it."""

    name: str
    pid: int
    started: float          # the process's start time (psutil), which tells it from a reused pid
    dedup: bool
    exchange: str
    log: str
    instance: int = 1       # 1, 2, ... when several replicas of one service run

    @property
    def key(self) -> str:
        """The name of its record and log: ``orders``, then ``orders@2`` for a second replica."""
        return record_key(self.name, self.instance)

    @property
    def dedup_label(self) -> str:
        return dedup_label(self.dedup)

    def _repr_pretty_(self, printer, cycle) -> None:
        """In a notebook, a cell ending in ``start(...)`` shows the same text every run (no pid)."""
        printer.text(f"{self.key}: running, {self.dedup_label}")


@dataclass(frozen=True)
class Status:
    """What a service is doing now; ``str()`` gives one line, ``summary`` the same without pid."""

    name: str
    state: str              # "running", "stopped", "killed" (SIGKILL) or "exited with status N"
    pids: tuple[int, ...] = ()
    dedup: bool | None = None
    uptime: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def pid(self) -> int | None:
        return self.pids[0] if self.pids else None

    @property
    def summary(self) -> str:
        if not self.running:
            return f"{self.name}: {self.state}"
        replicas = f" x{len(self.pids)}" if len(self.pids) > 1 else ""
        return f"{self.name}: running{replicas}, {dedup_label(self.dedup)}"

    def __str__(self) -> str:
        if self.running:
            return f"{self.summary} (pid {', '.join(map(str, self.pids))}, up {self.uptime:.0f} s)"
        return self.summary

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.summary)


class StatusTable(dict):
    """``status()``'s answer: a dict by name that a notebook shows as one line per service."""

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text("\n".join(str(one) for one in self.values()))


def dedup_label(dedup: bool | None) -> str:
    return "dedup on" if dedup else "dedup off"


def record_key(name: str, instance: int) -> str:
    return name if instance == 1 else f"{name}@{instance or 'unrecorded'}"


# The processes this interpreter started, by record key: reaped here, stopped at exit.
children: dict[str, subprocess.Popen] = {}
exit_codes: dict[str, int] = {}   # by service name: how its last process ended, if it failed


def check_name(name: str) -> str:
    if not isinstance(name, str) or not SERVICE_NAME_RE.fullmatch(name):
        raise ValueError(f"bad service name {name!r}: use 1-32 of a-z, 0-9, _ and -, starting with a letter")
    return name


def records_dir() -> Path:
    return paths.state_dir() / "services"


def record_path(key: str) -> Path:
    return records_dir() / f"{key}.json"


def lock_path(name: str) -> Path:
    """The service's lock file (never deleted: a process waiting on it holds that very file)."""
    return records_dir() / f"{check_name(name)}.lock"


_local_locks: dict[str, threading.RLock] = {}   # by lock path: the threads of this interpreter take turns
_depth: dict[str, int] = {}                      # by lock path: how deep this interpreter holds it
_locks_guard = threading.Lock()


def _holder(fd: int) -> str:
    """The pid written in a lock file by whoever holds it, for a message ("" when unreadable)."""
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


@contextlib.contextmanager
def exclusive(name: str, *, timeout: float = LOCK_WAIT, progress: Progress = quiet) -> Iterator[None]:
    """Hold ``name``'s lock across kernels: ``with exclusive("orders"): ...`` (re-entrant here).

    An exclusive ``flock(2)`` on ``state/services/<name>.lock``; the kernel releases it when the
    holder ends however it ends (a kernel killed mid-start leaves no stale lock). Waiting for
    another process says so once through ``progress``; after ``timeout`` seconds raises
    ServiceError naming the holder's pid.
    """
    path = lock_path(name)
    key = str(path)
    with _locks_guard:
        local = _local_locks.setdefault(key, threading.RLock())
    with local:
        if _depth.get(key):
            _depth[key] += 1
            try:
                yield
            finally:
                _depth[key] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by the services it starts (PEP 446)
        try:
            deadline, said = time.monotonic() + timeout, False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _holder(fd) or "another process"
                    if time.monotonic() >= deadline:
                        raise ServiceError(
                            f"{name}: pid {holder} has been starting or stopping it for over {timeout:g} s; "
                            f"wait for it, or end that process (its lock is {path})") from None
                    if not said:
                        progress(f"{name}: pid {holder} is starting or stopping it; waiting (up to {timeout:g} s)")
                        said = True
                    time.sleep(LOCK_POLL)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _depth[key] = 1
            try:
                yield
            finally:
                _depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def log_path(name: str, instance: int = 1) -> Path:
    return paths.log_dir() / f"svc-{record_key(check_name(name), instance)}.log"


def read_record(path: Path) -> Service | None:
    try:
        return Service(**(processes.read_record(path) or {}))
    except TypeError:
        return None


def remember(service: Service, child: subprocess.Popen) -> None:
    """Record a service this interpreter has just started (its record, its Popen for the exit status)."""
    children[service.key] = child
    processes.write_record(record_path(service.key), asdict(service))


def forget(service: Service, *, stale: bool = False) -> None:
    """Delete the service's record. ``stale``: a record found dead is deleted only if the file
    still holds it: another kernel may have restarted the service and recorded the new process
    under the same key meanwhile (the check of a dead pid takes a while on a loaded machine)."""
    if service.instance > 0:
        path = record_path(service.key)
        if stale and read_record(path) != service:
            return
        path.unlink(missing_ok=True)


def is_svc(process: psutil.Process) -> bool:
    """True for a live ``python -m svc`` process (processes.alive: not a zombie whose threads all ended),
    one still in its setpriv(1) step included (processes.command_of): taken for dead there, its
    record was dropped and a supervisor's loop started a second replica (CI: the poison-event test
    counted 5 and 6 starts for 4)."""
    try:
        command = processes.command_of(process.cmdline())
        # empty: inside execve(2) from setpriv to svc (seen once while 60 starts were read); pid and start time are ours
        return processes.alive(process) and (command == [] or command[1:3] == ["-m", "svc"])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def alive(service: Service) -> bool:
    """The recorded pid is still the process the kit started (same start time, still svc)."""
    reap(service.pid)
    return processes.recorded_process(asdict(service), is_svc) is not None


def instances(name: str) -> list[Service]:
    """Every live replica of the service, first instance first (stale records are dropped)."""
    check_name(name)
    if not records_dir().is_dir():
        return []
    live = []
    for path in [record_path(name), *records_dir().glob(f"{name}@*.json")]:
        service = read_record(path)
        if service is None:
            continue
        if alive(service):
            live.append(service)
        else:
            forget(service, stale=True)
    return sorted(live, key=lambda service: service.instance)


def running(name: str) -> Service | None:
    """The service's first live replica, or None when it is not running."""
    live = instances(name)
    return live[0] if live else None


def stop_now(services: list[Service], timeout: float) -> dict[str, str]:
    """Stop each service's group (:func:`nirvana.processes.stop_groups`); reap; forget.

    ``timeout=0`` is a crash: SIGKILL at once. Returns how each one ended by record key,
    "stopped" or "killed".
    """
    # the service leads its own group: pgid == pid
    ended = processes.stop_groups([service.pid for service in services], timeout, reaper=reap)
    for service in services:
        reap(service.pid)   # a group may look empty while its leader is still a zombie: keep how it ended
        name = service.key.split("@")[0]
        if ended[service.pid] == "killed":
            # The kit sent the SIGKILL: say so also when the exit status cannot be reaped here (a
            # service another interpreter started) or not yet (the kernel still finishing the kill).
            exit_codes[name] = -signal.SIGKILL
        elif not _reaped_here(service.pid):
            exit_codes.pop(name, None)   # stopped by its SIGTERM; an older "killed" no longer holds
        forget(service)
    return {service.key: ended[service.pid] for service in services}


def _reaped_here(pid: int) -> bool:
    """Whether ``pid`` is a child of this interpreter whose exit status was collected."""
    return any(child.pid == pid and child.returncode is not None for child in children.values())


def reap(pid: int) -> None:
    """Collect an exited child of ours (no zombie) and keep its exit status for status()."""
    for key, child in children.items():
        if child.pid == pid and child.poll() is not None:
            exit_codes[key.split("@")[0]] = child.returncode


def known_names() -> list[str]:
    """The talk's services, then any other service the kit has a record or a process for."""
    keys = sorted(children)
    if records_dir().is_dir():
        keys += sorted(path.stem for path in records_dir().glob("*.json"))
    return list(dict.fromkeys([*NAMES, *(key.split("@")[0] for key in keys)]))


def kit_processes() -> list[Service]:
    """Every live ``python -m svc`` this kit state dir started, read from the processes themselves."""
    state, found = str(paths.state_dir()), []
    for process in psutil.process_iter():
        try:
            if is_svc(process) and process.environ().get(KIT_MARK) == state:
                environ = process.environ()
                found.append(Service(
                    environ.get(KIT_NAME) or environ.get("SERVICE_NAME", "svc"), process.pid, process.create_time(),
                    environ.get("ENABLE_ETCD") == "true", environ.get("EVENTS_EXCHANGE", DEFAULT_EXCHANGE),
                    "", instance=0,   # instance 0: no record of its own to forget
                ))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def unrecorded(name: str) -> list[Service]:
    """Live ``python -m svc`` processes of this kit state dir serving ``name`` with no live record
    (instance 0): a record lost to a race of an older kit, or deleted by hand."""
    recorded = {service.pid for service in instances(name)}
    return [service for service in kit_processes() if service.name == name and service.pid not in recorded]


def record_again(name: str) -> list[Service]:
    """Record each unrecorded process serving ``name`` under a free instance number, so start()
    finds it running and stop() stops it; returns the services as recorded now. Call it holding
    :func:`exclusive`."""
    taken = {service.instance for service in instances(name)}
    again = []
    for found in unrecorded(name):
        instance = next(i for i in range(1, len(taken) + 2) if i not in taken)
        taken.add(instance)
        service = Service(name, found.pid, found.started, found.dedup, found.exchange, "", instance)
        processes.write_record(record_path(service.key), asdict(service))
        again.append(service)
    return again


def running_pids() -> list[int]:
    """Pids of every live ``python -m svc`` that this kit state dir started, recorded or not."""
    return sorted(service.pid for service in kit_processes())
