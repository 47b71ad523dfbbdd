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
import ctypes
import json
import os
import re
import signal
import socket
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
ETCD_CONNECT_TIMEOUT = 1.0       # seconds: etcd answers on loopback at once or not at all
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
    instance: int = 1       # 1, 2, ... when several replicas of one service run

    @property
    def key(self) -> str:
        """The name of its record and log: ``orders``, then ``orders@2`` for a second replica."""
        return _key(self.name, self.instance)

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


def _key(name: str, instance: int) -> str:
    return name if instance == 1 else f"{name}@{instance or 'unrecorded'}"


# The processes this interpreter started, by record key: reaped here, stopped at exit.
_children: dict[str, subprocess.Popen] = {}
_exit_codes: dict[str, int] = {}   # by service name: how its last process ended, if it failed
_atexit_registered = False


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"bad service name {name!r}: use 1-32 of a-z, 0-9, _ and -, starting with a letter")
    return name


def _records_dir() -> Path:
    return paths.state_dir() / "services"


def _record_path(key: str) -> Path:
    return _records_dir() / f"{key}.json"


def log_path(name: str, instance: int = 1) -> Path:
    return paths.log_dir() / f"svc-{_key(_check_name(name), instance)}.log"


def _read_record(path: Path) -> Service | None:
    try:
        return Service(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_record(service: Service) -> None:
    _records_dir().mkdir(parents=True, exist_ok=True)
    path = _record_path(service.key)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(service)))
    tmp.replace(path)


def _forget(service: Service) -> None:
    if service.instance > 0:
        _record_path(service.key).unlink(missing_ok=True)


def _is_svc(process: psutil.Process) -> bool:
    """True for a live ``python -m svc`` process (not a zombie)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and process.cmdline()[1:3] == ["-m", "svc"]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _alive(service: Service) -> bool:
    """The recorded pid is still the process the kit started (same start time, still svc)."""
    _reap(service)
    try:
        process = psutil.Process(service.pid)
        return abs(process.create_time() - service.started) < SAME_START and _is_svc(process)
    except psutil.NoSuchProcess:
        return False


def instances(name: str) -> list[Service]:
    """Every live replica of the service, first instance first (stale records are dropped)."""
    _check_name(name)
    if not _records_dir().is_dir():
        return []
    live = []
    for path in [_record_path(name), *_records_dir().glob(f"{name}@*.json")]:
        service = _read_record(path)
        if service is None:
            continue
        if _alive(service):
            live.append(service)
        else:
            _forget(service)
    return sorted(live, key=lambda service: service.instance)


def running(name: str) -> Service | None:
    """The service's first live replica, or None when it is not running."""
    live = instances(name)
    return live[0] if live else None


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


def _check_etcd(endpoints_text: str) -> None:
    """Raise ServiceError unless one of the etcd endpoints (``host:port,...``) accepts a connection."""
    for endpoint in endpoints_text.split(","):
        host, _, port = endpoint.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=ETCD_CONNECT_TIMEOUT).close()
            return
        except (OSError, ValueError):
            continue
    raise ServiceError(f"etcd is not answering at {endpoints_text}: start the stack with `./kit up` "
                       "(deduplication needs etcd; start with dedup=False to run without it)")


PR_SET_PDEATHSIG = 1   # prctl(2): the signal a process gets when the thread that started it ends


def _dies_with_this_process():
    """A ``preexec_fn`` that has Linux SIGKILL the child when its starter ends (prctl(2), PR_SET_PDEATHSIG).

    A kernel that Jupyter shuts down or restarts has a few seconds for atexit's graceful stop and
    is then killed, and a busy service (WORK_MS) would outlive it; SIGKILL is the crash the talk
    demonstrates anyway: events it had not acked go back to its queue. The signal follows the
    *thread* that started the child: the kit starts services from the kernel's main thread (cells
    and widget clicks run there). None off Linux (the atexit stop remains).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up before the fork: the child only calls it
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:   # the starter ended before prctl took effect: no signal would come
            os._exit(1)

    return set_death_signal


def _spawn(name: str, instance: int, dedup: bool, environment: dict[str, str]) -> Service:
    log = log_path(name, instance)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "svc"],
            cwd=paths.ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,   # its own process group: a stop reaches all of it, Ctrl-C in Jupyter none
            preexec_fn=_dies_with_this_process(),
        )
    _register_atexit()
    exchange = environment.get("EVENTS_EXCHANGE") or DEFAULT_EXCHANGE
    service = Service(name, child.pid, psutil.Process(child.pid).create_time(), dedup, exchange, str(log), instance)
    _children[service.key] = child
    _write_record(service)
    return service


def start(
    name: str,
    *,
    dedup: bool = False,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    replicas: int = 1,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> Service:
    """Start ``python -m svc`` as ``name``; with ``dedup`` it deduplicates through etcd.

    ``env`` adds settings (EVENTS_EXCHANGE, ETCD_PREFIX, ...); ``replicas`` runs that many
    copies on the one queue. Starting a running service is a no-op that says so (or starts
    the replicas still missing); asking for the other dedup setting is an error pointing at
    restart(). With ``wait`` it returns once the queue has a consumer per replica, or raises
    ServiceError with the last log lines (and stops what it started) when a replica exits or
    the deadline passes. Returns the first replica.
    """
    _check_name(name)
    if replicas < 1:
        raise ValueError(f"replicas={replicas}: run at least 1")
    live = instances(name)
    if live and live[0].dedup != dedup:
        raise ServiceError(
            f"{name} is already running with {live[0].dedup_label}: use restart({name!r}, dedup={dedup}) to change it"
        )
    label = dedup_label(dedup) + (f", {replicas} replicas" if replicas > 1 else "")
    if len(live) >= replicas:
        progress(f"{name}: already running, {label}")
        return live[0]
    environment = _environment(name, dedup, env)
    exchange = environment.get("EVENTS_EXCHANGE") or DEFAULT_EXCHANGE
    url = environment["AMQP_URL"]
    rabbit.queue_counts(rabbit.queue_of(name, exchange), url=url)   # RabbitMQ down: says which command starts it
    if dedup and wait:
        _check_etcd(environment["ETCD_ENDPOINTS"])   # with dedup on, svc consumes only once etcd answers
    free = (i for i in range(1, replicas + len(live) + 1) if i not in {s.instance for s in live})
    started = [_spawn(name, next(free), dedup, environment) for _ in range(replicas - len(live))]
    if not wait:
        progress(f"{name}: started, {label}")
        return (live + started)[0]

    def failed() -> Service | None:
        return next((s for s in started if _children[s.key].poll() is not None), None)

    try:
        poll(
            lambda: (failed(), rabbit.consumers(name, exchange=exchange, url=url)),
            lambda seen: seen[0] is not None or seen[1] >= replicas,
            what=f"{name} ({label}) to consume {rabbit.queue_of(name, exchange)}",
            timeout=timeout,
            progress=progress,
            describe=lambda seen: f"{seen[1]} consumer(s)",
        )
    except TimeoutError as error:
        _stop_now(started, 0)
        raise ServiceError(f"{name} did not become ready: {error}\n{logs(name)}") from None
    dead = failed()
    if dead is not None:
        code = _children[dead.key].returncode
        _stop_now(started, 0)
        _exit_codes[name] = code
        raise ServiceError(f"{name} exited with status {code} before it was ready:\n{logs(name, instance=dead.instance)}")
    _exit_codes.pop(name, None)
    progress(f"{name}: ready, {label}")
    return (live + started)[0]


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

    ``timeout=0`` is a crash: SIGKILL at once. Returns how each one ended by record key,
    "stopped" or "killed".
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
        _forget(service)
        ended[service.key] = how
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
    child = _children.get(service.key)
    if child is not None and child.pid == service.pid and child.poll() is not None:
        _exit_codes[service.name] = child.returncode


def _targets(name: str, instance: int | None) -> list[Service]:
    live = instances(name)
    return live if instance is None else [s for s in live if s.instance == instance]


def stop(
    name: str, timeout: float = DEFAULT_TIMEOUT, *, instance: int | None = None, progress: Progress = print
) -> bool:
    """Stop gracefully: SIGTERM to the group, SIGKILL after ``timeout``. False if not running.

    Every replica, or only ``instance`` (1, 2, ...).
    """
    targets = _targets(name, instance)
    if not targets:
        progress(f"{_key(name, instance or 1)}: not running")
        return False
    for key, how in _stop_now(targets, timeout).items():
        progress(f"{key}: stopped" if how == "stopped" else f"{key}: killed, it ignored SIGTERM for {timeout:g} s")
    _await_detached(name, targets[0].exchange)
    return True


def kill(name: str, *, instance: int | None = None, progress: Progress = print) -> bool:
    """Crash it: SIGKILL to the group, no goodbye; events it had not acked go back to its queue.

    Every replica, or only ``instance`` (its siblings carry on).
    """
    targets = _targets(name, instance)
    if not targets:
        progress(f"{_key(name, instance or 1)}: not running")
        return False
    for key in _stop_now(targets, 0):
        progress(f"{key}: killed (SIGKILL)")
    _await_detached(name, targets[0].exchange)
    return True


def _await_detached(name: str, exchange: str, timeout: float = 5.0) -> None:
    """Wait until RabbitMQ has noticed: the queue has one consumer per replica still running.

    A killed process's socket closes at once, but the broker drops its consumer a moment later;
    until then it could hand a new event to the dead consumer. Waiting here makes "published while
    it was down" mean exactly that (the event waits in the queue, ready).
    """
    left = len(instances(name))
    try:
        poll(lambda: rabbit.consumers(name, exchange=exchange), lambda seen: seen <= left,
             what=f"RabbitMQ to drop the consumers of {name}", timeout=timeout, progress=quiet)
    except (rabbit.RabbitUnavailable, TimeoutError):
        pass   # nothing more to learn from a broker that is down or slow; the stop itself is done


def restart(
    name: str,
    *,
    dedup: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    replicas: int | None = None,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> Service:
    """Stop (if running) and start again; ``dedup``/``replicas`` None keep the current setting."""
    live = instances(name)
    if dedup is None:
        dedup = live[0].dedup if live else False
    if replicas is None:
        replicas = max(len(live), 1)
    if live:
        stop(name, timeout, progress=progress)
    return start(name, dedup=dedup, timeout=timeout, replicas=replicas, env=env, progress=progress)


def known_names() -> list[str]:
    """The talk's services, then any other service the kit has a record or a process for."""
    keys = sorted(_children)
    if _records_dir().is_dir():
        keys += sorted(path.stem for path in _records_dir().glob("*.json"))
    return list(dict.fromkeys([*NAMES, *(key.split("@")[0] for key in keys)]))


def status(names: list[str] | tuple[str, ...] | None = None) -> StatusTable:
    """Each service's state: ``print(status()["orders"])`` or ``for s in status().values()``."""
    result = StatusTable()
    for name in names or known_names():
        live = instances(name)
        if live:
            uptime = time.time() - live[0].started
            result[name] = Status(name, "running", tuple(s.pid for s in live), live[0].dedup, uptime)
        elif _exit_codes.get(name) == -signal.SIGKILL:
            result[name] = Status(name, "killed")
        elif _exit_codes.get(name, 0) not in (0, -signal.SIGTERM):
            result[name] = Status(name, f"exited with status {_exit_codes[name]}")
        else:
            result[name] = Status(name, "stopped")
    return result


def summary(names: list[str] | tuple[str, ...] | None = None) -> str:
    """One line per service, without pids or times: the same text every run."""
    return "\n".join(s.summary for s in status(names).values())


def logs(name: str, lines: int = LOG_TAIL_LINES, *, instance: int = 1) -> str:
    """The last lines the service wrote (its log survives a stop, until the next start)."""
    try:
        text = log_path(name, instance).read_text(errors="replace")
    except FileNotFoundError:
        return f"{_key(name, instance)}: no log yet"
    return "\n".join(text.splitlines()[-lines:])


def _kit_processes() -> list[Service]:
    """Every live ``python -m svc`` this kit state dir started, read from the processes themselves."""
    state, found = str(paths.state_dir()), []
    for process in psutil.process_iter():
        try:
            if _is_svc(process) and process.environ().get(KIT_MARK) == state:
                environ = process.environ()
                found.append(Service(
                    environ.get("SERVICE_NAME", "svc"), process.pid, process.create_time(),
                    environ.get("ENABLE_ETCD") == "true", environ.get("EVENTS_EXCHANGE", DEFAULT_EXCHANGE),
                    "", instance=0,   # instance 0: no record of its own to forget
                ))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def running_pids() -> list[int]:
    """Pids of every live ``python -m svc`` that this kit state dir started, recorded or not."""
    return sorted(service.pid for service in _kit_processes())


def stop_all(timeout: float = DEFAULT_TIMEOUT, *, progress: Progress = quiet) -> list[str]:
    """Stop every service the kit started, this kernel's and earlier ones'; return their keys.

    Recorded services first; then any process the kit started whose record was lost.
    """
    recorded = [s for name in known_names() for s in instances(name)]
    pids = {s.pid for s in recorded}
    ended = _stop_now(recorded + [s for s in _kit_processes() if s.pid not in pids], timeout)
    for key, how in ended.items():
        progress(f"{key}: {how}")
    return list(ended)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_children)
        _atexit_registered = True


def _stop_children() -> None:
    """At interpreter exit: stop what this process started (and is still the same process)."""
    names = dict.fromkeys(key.split("@")[0] for key in _children)
    mine = [s for name in names for s in instances(name) if s.key in _children and _children[s.key].pid == s.pid]
    _stop_now(mine, 5.0)


__all__ = [
    "ServiceError", "Service", "Status", "StatusTable", "NAMES",
    "start", "stop", "kill", "restart", "instances", "running", "status", "summary", "logs", "log_path",
    "running_pids", "stop_all", "known_names",
]
