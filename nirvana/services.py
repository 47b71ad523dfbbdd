"""The talk's services as processes: start, stop, kill, restart, status and logs.

Each service runs the way an operator would run it: ``python -m svc`` with its settings in the
environment, in its own session (so a stop reaches the whole process group), its output in
``state/logs/svc-<name>.log``. Each start is recorded in ``state/services/<name>.json`` (pid
and the process's start time), so a later kernel can still stop what an earlier one started:
before signalling, the pid is checked to still be that very ``python -m svc`` process.

Everything this process started is stopped when it exits (``atexit``: a notebook kernel's
shutdown). A service is *ready* when its queue has a consumer.
"""

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from svc.topology import DEFAULT_EXCHANGE

from . import endpoints, paths, rabbit
from ._wait import Progress, poll, quiet

NAMES = ("orders", "notify")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
DEFAULT_TIMEOUT = 10.0
LOG_TAIL_LINES = 20
KIT_MARK = "NIRVANA_KIT_STATE"   # set in each service's environment: which kit state dir started it
KILL_WAIT = 2.0                  # seconds for the kernel to finish a SIGKILL
SAME_START = 0.05                # seconds: a recorded start time matches the live process's


class ServiceError(RuntimeError):
    """A service did not start or could not be found."""


@dataclass(frozen=True)
class Service:
    """One running ``python -m svc`` process as the kit recorded it."""

    name: str
    pid: int
    started: float          # the process's start time (psutil), which tells it from a reused pid
    dedup: bool
    exchange: str
    log: str

    @property
    def dedup_label(self) -> str:
        return "dedup on" if self.dedup else "dedup off"


@dataclass(frozen=True)
class Status:
    """What a service is doing now; ``str()`` gives one line, ``summary`` the same without pid."""

    name: str
    state: str              # "running", "stopped" or "exited with status N"
    pid: int | None = None
    dedup: bool | None = None
    uptime: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def summary(self) -> str:
        if self.running:
            return f"{self.name}: running, {'dedup on' if self.dedup else 'dedup off'}"
        return f"{self.name}: {self.state}"

    def __str__(self) -> str:
        if self.running:
            return f"{self.summary} (pid {self.pid}, up {self.uptime:.0f} s)"
        return self.summary


# The processes this interpreter started, by name: reaped here, stopped at exit.
_children: dict[str, subprocess.Popen] = {}
_exit_codes: dict[str, int] = {}
_atexit_registered = False


def _check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ValueError(f"bad service name {name!r}: use 1-32 of a-z, 0-9, _ and -, starting with a letter")
    return name


def _records_dir() -> Path:
    return paths.state_dir() / "services"


def _record_path(name: str) -> Path:
    return _records_dir() / f"{name}.json"


def log_path(name: str) -> Path:
    return paths.log_dir() / f"svc-{_check_name(name)}.log"


def _read_record(name: str) -> Service | None:
    try:
        return Service(**json.loads(_record_path(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_record(service: Service) -> None:
    _records_dir().mkdir(parents=True, exist_ok=True)
    tmp = _record_path(service.name).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(service)))
    tmp.replace(_record_path(service.name))


def _forget(name: str) -> None:
    _record_path(name).unlink(missing_ok=True)


def _is_svc(process: psutil.Process) -> bool:
    """True for a live ``python -m svc`` process (not a zombie)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and process.cmdline()[1:3] == ["-m", "svc"]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _alive(service: Service) -> bool:
    """The recorded pid is still the process the kit started (same start time, still svc)."""
    child = _children.get(service.name)
    if child is not None and child.pid == service.pid and child.poll() is not None:
        _exit_codes[service.name] = child.returncode
        return False
    try:
        process = psutil.Process(service.pid)
        return abs(process.create_time() - service.started) < SAME_START and _is_svc(process)
    except psutil.NoSuchProcess:
        return False


def running(name: str) -> Service | None:
    """The running service of that name, or None (a stale record is dropped)."""
    service = _read_record(_check_name(name))
    if service is None:
        return None
    if _alive(service):
        return service
    _forget(name)
    return None


def _environment(name: str, dedup: bool, env: dict[str, str] | None) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        SERVICE_NAME=name,
        ENABLE_ETCD="true" if dedup else "false",
        AMQP_URL=endpoints.AMQP_URL,
        ETCD_ENDPOINTS=endpoints.ETCD_ENDPOINT,
        STATSD_HOST=endpoints.HOST,
        STATSD_PORT=str(endpoints.STATSD_PORT),
        PYTHONUNBUFFERED="1",
    )
    environment.update(env or {})
    environment[KIT_MARK] = str(paths.state_dir())
    return environment


def start(
    name: str,
    *,
    dedup: bool = False,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> Service:
    """Start ``python -m svc`` as ``name``; with ``dedup`` it deduplicates through etcd.

    ``env`` adds settings (EVENTS_EXCHANGE, ETCD_PREFIX, ...). Starting a running service is a
    no-op that says so; asking for the other dedup setting is an error pointing at restart().
    With ``wait`` it returns once the service's queue has a consumer, or raises ServiceError
    with the last log lines (and stops what it started) when it exits or the deadline passes.
    """
    current = running(name)
    if current is not None:
        if current.dedup != dedup:
            raise ServiceError(
                f"{name} is already running with {current.dedup_label}: "
                f"use restart({name!r}, dedup={dedup}) to change it"
            )
        progress(f"{name}: already running, {current.dedup_label}")
        return current
    environment = _environment(name, dedup, env)
    exchange = environment.get("EVENTS_EXCHANGE") or DEFAULT_EXCHANGE
    rabbit.queue_counts(rabbit.queue_of(name, exchange), url=environment["AMQP_URL"])  # says if RabbitMQ is down
    log = log_path(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "svc"],
            cwd=paths.ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,   # its own process group: a stop reaches all of it, Ctrl-C in Jupyter none
        )
    _register_atexit()
    _children[name] = child
    _exit_codes.pop(name, None)
    service = Service(name, child.pid, psutil.Process(child.pid).create_time(), dedup, exchange, str(log))
    _write_record(service)
    label = service.dedup_label
    if not wait:
        progress(f"{name}: started, {label}")
        return service
    try:
        poll(
            lambda: (child.poll(), rabbit.consumers(name, exchange=exchange, url=environment["AMQP_URL"])),
            lambda seen: seen[0] is not None or seen[1] > 0,
            what=f"{name} to consume its queue ({label})",
            timeout=timeout,
            progress=progress,
            describe=lambda seen: f"{seen[1]} consumer(s)",
        )
    except TimeoutError as error:
        _stop_now([service], 0)
        raise ServiceError(f"{name} did not become ready: {error}\n{logs(name)}") from None
    if child.returncode is not None:
        _exit_codes[name] = child.returncode
        _forget(name)
        raise ServiceError(f"{name} exited with status {child.returncode} before it was ready:\n{logs(name)}")
    progress(f"{name}: ready, {label}")
    return service


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _signal_group(service: Service, sig: signal.Signals) -> None:
    try:
        os.killpg(service.pid, sig)   # the service leads its own group: pgid == pid
    except ProcessLookupError:
        pass


def _stop_now(services: list[Service], timeout: float) -> dict[str, str]:
    """SIGTERM each group, wait up to ``timeout`` together, SIGKILL what is left; reap; forget.

    ``timeout=0`` is a crash: SIGKILL at once. Returns how each one ended, "stopped" or "killed".
    """
    for service in services:
        _signal_group(service, signal.SIGTERM if timeout > 0 else signal.SIGKILL)
    deadline = time.monotonic() + timeout
    ended = {}
    for service in services:
        how = "stopped" if timeout > 0 else "killed"
        if not _wait_group(service, deadline):
            _signal_group(service, signal.SIGKILL)
            how = "killed"
            _wait_group(service, time.monotonic() + KILL_WAIT)
        _forget(service.name)
        ended[service.name] = how
    return ended


def _wait_group(service: Service, deadline: float) -> bool:
    """Wait until no process of the service's group is left; False at the deadline."""
    while True:
        _reap(service)
        if not _group_members(service.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _reap(service: Service) -> None:
    """Collect an exited child of ours (no zombie) and keep its exit status for status()."""
    child = _children.get(service.name)
    if child is not None and child.pid == service.pid and child.poll() is not None:
        _exit_codes[service.name] = child.returncode


def stop(name: str, timeout: float = DEFAULT_TIMEOUT, *, progress: Progress = print) -> bool:
    """Stop gracefully: SIGTERM to the group, then SIGKILL after ``timeout``. False if not running."""
    service = running(name)
    if service is None:
        progress(f"{name}: not running")
        return False
    how = _stop_now([service], timeout)[name]
    progress(f"{name}: stopped" if how == "stopped" else f"{name}: killed, it ignored SIGTERM for {timeout:g} s")
    return True


def kill(name: str, *, progress: Progress = print) -> bool:
    """Crash it: SIGKILL to the group, no goodbye. Unacked events go back to its queue."""
    service = running(name)
    if service is None:
        progress(f"{name}: not running")
        return False
    _stop_now([service], 0)
    progress(f"{name}: killed (SIGKILL)")
    return True


def restart(
    name: str,
    *,
    dedup: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> Service:
    """Stop (if running) and start again; ``dedup=None`` keeps the current setting."""
    current = running(name)
    if dedup is None:
        dedup = current.dedup if current else False
    if current is not None:
        stop(name, timeout, progress=progress)
    return start(name, dedup=dedup, timeout=timeout, env=env, progress=progress)


def known_names() -> list[str]:
    """The talk's services, then any other service the kit has a record or a process for."""
    names = list(NAMES) + sorted(_children)
    if _records_dir().is_dir():
        names += sorted(path.stem for path in _records_dir().glob("*.json"))
    return list(dict.fromkeys(names))


def status(names: list[str] | tuple[str, ...] | None = None) -> dict[str, Status]:
    """Each service's state: ``print(status()["orders"])`` or ``for s in status().values()``."""
    result = {}
    for name in names or known_names():
        service = running(name)
        if service is not None:
            uptime = time.time() - service.started
            result[name] = Status(name, "running", service.pid, service.dedup, uptime)
        elif name in _exit_codes and _exit_codes[name] not in (0, -signal.SIGTERM, -signal.SIGKILL):
            result[name] = Status(name, f"exited with status {_exit_codes[name]}")
        else:
            result[name] = Status(name, "stopped")
    return result


def summary(names: list[str] | tuple[str, ...] | None = None) -> str:
    """One line per service, without pids or times: the same text every run."""
    return "\n".join(s.summary for s in status(names).values())


def logs(name: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines the service wrote (its log survives a stop, until the next start)."""
    try:
        text = log_path(name).read_text(errors="replace")
    except FileNotFoundError:
        return f"{name}: no log yet"
    return "\n".join(text.splitlines()[-lines:])


def running_pids() -> list[int]:
    """Pids of every live ``python -m svc`` that this kit state dir started, recorded or not."""
    state = str(paths.state_dir())
    pids = []
    for process in psutil.process_iter():
        try:
            if _is_svc(process) and process.environ().get(KIT_MARK) == state:
                pids.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(pids)


def stop_all(timeout: float = DEFAULT_TIMEOUT, *, progress: Progress = quiet) -> list[str]:
    """Stop every service the kit started, this kernel's and earlier ones'; return their names."""
    services = [s for s in (running(name) for name in known_names()) if s is not None]
    ended = _stop_now(services, timeout)
    for name, how in ended.items():
        progress(f"{name}: {how}")
    return list(ended)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_children)
        _atexit_registered = True


def _stop_children() -> None:
    """At interpreter exit: stop what this process started (and is still the same process)."""
    services = [s for s in (running(name) for name in list(_children)) if s is not None]
    _stop_now([s for s in services if _children[s.name].pid == s.pid], 5.0)


__all__ = [
    "ServiceError", "Service", "Status", "NAMES",
    "start", "stop", "kill", "restart", "running", "status", "summary", "logs", "log_path",
    "running_pids", "stop_all", "known_names",
]
