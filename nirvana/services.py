"""The talk's services as processes: start, stop, kill, restart, status and logs.

Each service runs the way an operator would run it: ``python -m svc`` with its settings in the
environment, in its own session (so a stop reaches the whole process group), its output in
``state/logs/svc-<name>.log``. Each start is recorded (:mod:`nirvana.service_records`), so a
later kernel can still stop what an earlier one started: before signalling, the pid is checked
to still be that very ``python -m svc`` process. Starting and waiting are :mod:`nirvana.launcher`'s, stopping
:mod:`nirvana.processes`'.

One service name, one set of processes, whichever kernels ask: start, stop, kill and restart hold
the service's lock (:func:`nirvana.service_records.exclusive`) from "is it running?" to the record
written, so of two kernels starting ``orders`` at once one starts it and the other finds it running
(and says so). A stop ends every process of this kit serving the name, recorded or not, and then
reads the queue's consumers from RabbitMQ: one the kit did not start is named, never taken for done.

Everything this process started is stopped when it exits (``atexit``: a notebook kernel's
shutdown). A service is *ready* when its queue has a consumer.
"""

import atexit
import contextlib
import os
import signal
import sys
import time

from . import launcher, paths, rabbit
from . import service_records as records
from ._wait import Progress, poll, quiet
from .errors import ServiceError
from .settings import current
from .service_records import (NAMES, Service, Status, StatusTable, dedup_label, instances, known_names, log_path,
                              running, running_pids)

DEFAULT_TIMEOUT = 10.0           # seconds for a start to consume: svc's start no longer grows with its done
                                 # ids (it imports DONE_CACHE of them at most, svc/done.py; with 1,000,000 in
                                 # etcd it took 18 s and the wait gave up): bench/bench_svc.py measures it
LOG_TAIL_LINES = 20
ETCD_CONNECT_TIMEOUT = 1.0       # seconds: etcd answers on loopback at once or not at all

_atexit_registered = False


def _environment(name: str, dedup: bool, env: dict[str, str] | None) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(current().service_environment())   # where the kit's helpers look too
    environment.update(SERVICE_NAME=name, ENABLE_ETCD="true" if dedup else "false", PYTHONUNBUFFERED="1")
    environment.update(env or {})
    environment[records.KIT_MARK] = str(paths.state_dir())
    environment[records.KIT_NAME] = name   # the kit's name: SERVICE_NAME may be another's (env)
    return environment


def _check_etcd(endpoints_text: str) -> None:
    """Raise ServiceError unless one of the etcd endpoints (``host:port,...``) accepts a connection."""
    for endpoint in endpoints_text.split(","):
        host, _, port = endpoint.strip().rpartition(":")
        if port.isdigit() and launcher.tcp_open(int(port), host, ETCD_CONNECT_TIMEOUT):
            return
    raise ServiceError(f"etcd is not answering at {endpoints_text}: start the stack with `./kit up` "
                       "(deduplication needs etcd; start with dedup=False to run without it)")


def _spawn(name: str, instance: int, dedup: bool, environment: dict[str, str]) -> tuple[Service, launcher.Launched]:
    log = log_path(name, instance)
    # it dies with this kernel, even busy (processes.death_signal): none outlives its notebook
    child = launcher.start(launcher.Command([sys.executable, "-m", "svc"], log, environment, paths.ROOT,
                                            name=records.record_key(name, instance), die_with_starter=True))
    _register_atexit()
    service = Service(name, child.pid, child.started, dedup, environment["EVENTS_EXCHANGE"], str(log), instance)
    records.remember(service, child.popen)
    return service, child


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
    the replicas still missing), whichever kernel started it, one starting it at this very
    moment included (the service's lock: the later start waits for the earlier one, then finds
    its process); asking for the other dedup setting is an error pointing at restart(). With
    ``wait`` it returns once the queue has a consumer per replica, or raises ServiceError with
    the last log lines (and stops what it started) when a replica exits or the deadline passes.
    Returns the first replica.
    """
    records.check_name(name)
    if replicas < 1:
        raise ValueError(f"replicas={replicas}: run at least 1")
    with records.exclusive(name, progress=progress):
        return _start(name, dedup, wait, timeout, replicas, env, progress)


def _start(name: str, dedup: bool, wait: bool, timeout: float, replicas: int, env: dict[str, str] | None,
           progress: Progress) -> Service:
    """start()'s work, holding the service's lock."""
    records.record_again(name)   # a process of ours serving it without a record is running too
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
    exchange, url = environment["EVENTS_EXCHANGE"], environment["AMQP_URL"]
    rabbit.queue_counts(rabbit.queue_of(name, exchange), url=url)   # RabbitMQ down: says which command starts it
    if dedup and wait:
        _check_etcd(environment["ETCD_ENDPOINTS"])   # with dedup on, svc consumes only once etcd answers
    free = (i for i in range(1, replicas + len(live) + 1) if i not in {s.instance for s in live})
    launched = [_spawn(name, next(free), dedup, environment) for _ in range(replicas - len(live))]
    started = [service for service, _child in launched]
    if not wait:
        progress(f"{name}: started, {label}")
        return (live + started)[0]
    try:
        launcher.wait_ready(
            # its queue may not exist until the new process declares it: that reads as 0 consumers
            lambda: rabbit.queue_counts(rabbit.queue_of(name, exchange), url=url).consumers,
            lambda consumers: consumers >= replicas,
            waiting=[child for _service, child in launched],
            what=f"{name} ({label}) to consume {rabbit.queue_of(name, exchange)}",
            timeout=timeout,
            progress=progress,
            # what the service last said (connecting, importing its done ids...): a slow start names its step
            describe=lambda consumers: f"{consumers} consumer(s); {_last_line(started[0])}",
        )
    except launcher.Exited as exited:
        dead = next(service for service, child in launched if child is exited.launched)
        code = exited.launched.returncode
        records.stop_now(started, 0)
        records.exit_codes[name] = code
        raise ServiceError(f"{name} exited with status {code} before it was ready:\n{logs(name, instance=dead.instance)}") from None
    except TimeoutError as error:
        records.stop_now(started, 0)
        raise ServiceError(f"{name} did not become ready: {error}\n{logs(name)}") from None
    records.exit_codes.pop(name, None)
    progress(f"{name}: ready, {label}")
    return (live + started)[0]


def _last_line(service: Service) -> str:
    """The last line ``service``'s replica wrote to its log, or that it wrote none yet."""
    lines = logs(service.name, 1, instance=service.instance).strip()
    return f"its log: {lines[-200:]}" if lines else "nothing in its log yet"


def _targets(name: str, instance: int | None) -> list[Service]:
    """The processes to stop: every live replica, or only ``instance``; with every replica, also
    any process of this kit serving ``name`` whose record is gone (key ``<name>@unrecorded``)."""
    live = instances(name)
    if instance is not None:
        return [s for s in live if s.instance == instance]
    return live + records.unrecorded(name)


def stop(
    name: str, timeout: float = DEFAULT_TIMEOUT, *, instance: int | None = None, progress: Progress = print
) -> bool:
    """Stop gracefully: SIGTERM to the group, SIGKILL after ``timeout``. False if not running.

    Every process of this kit serving ``name`` (recorded or not, whichever kernel started it), or
    only replica ``instance`` (1, 2, ...). Then waits (up to 5 s) for RabbitMQ to drop their
    consumers; a consumer the kit did not start that stays on the queue is named in a line of
    its own.
    """
    with records.exclusive(name, progress=progress):
        targets = _targets(name, instance)
        if not targets:
            progress(f"{records.record_key(name, instance or 1)}: not running")
            return False
        for key, how in records.stop_now(targets, timeout).items():
            progress(f"{key}: stopped" if how == "stopped" else f"{key}: killed, it ignored SIGTERM for {timeout:g} s")
        _await_detached(name, targets[0].exchange, progress)
        return True


def kill(name: str, *, instance: int | None = None, progress: Progress = print) -> bool:
    """Crash it: SIGKILL to the group, no goodbye; events it had not acked go back to its queue.

    Every replica (with any process of this kit serving ``name`` that has no record), or only
    ``instance`` (its siblings carry on).
    """
    with records.exclusive(name, progress=progress):
        targets = _targets(name, instance)
        if not targets:
            progress(f"{records.record_key(name, instance or 1)}: not running")
            return False
        for key in records.stop_now(targets, 0):
            progress(f"{key}: killed (SIGKILL)")
        _await_detached(name, targets[0].exchange, progress)
        return True


DETACH_TIMEOUT = 5.0    # seconds for RabbitMQ to drop the consumers of stopped processes


def _await_detached(name: str, exchange: str, progress: Progress, timeout: float = DETACH_TIMEOUT) -> None:
    """Wait until RabbitMQ has noticed: the queue has one consumer per replica still running.

    A killed process's socket closes at once, but the broker drops its consumer a moment later;
    until then it could hand a new event to the dead consumer. Waiting here makes "published while
    it was down" mean exactly that (the event waits in the queue, ready). Consumers still there at
    the deadline are none of the kit's: they are named through ``progress``, one line.
    """
    left = len(instances(name))
    queue = rabbit.queue_of(name, exchange)
    try:
        seen = poll(lambda: rabbit.consumers(name, exchange=exchange), lambda seen: seen <= left,
                    what=f"RabbitMQ to drop the consumers of {name}", timeout=timeout, progress=quiet)
    except (rabbit.RabbitUnavailable, rabbit.NoSuchQueue):
        return   # nothing more to learn from a broker that is down; the stop itself is done
    except TimeoutError:
        try:
            seen = rabbit.consumers(name, exchange=exchange)
        except (rabbit.RabbitUnavailable, rabbit.NoSuchQueue):
            return
    extra = seen - len(instances(name))
    if extra > 0:
        progress(f"{name}: its queue {queue} still has {extra} consumer{'s' if extra > 1 else ''} the kit did not "
                 "start (a `python -m svc` run by hand, or by another state folder)")


def restart(
    name: str,
    *,
    dedup: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    replicas: int | None = None,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> Service:
    """Stop (if running) and start again; ``dedup``/``replicas`` None keep the current setting.

    Holds the service's lock throughout: no other kernel starts it between the stop and the start.
    """
    with records.exclusive(name, progress=progress):
        live = instances(name)
        if dedup is None:
            dedup = live[0].dedup if live else False
        if replicas is None:
            replicas = max(len(live), 1)
        if live or records.unrecorded(name):
            stop(name, timeout, progress=progress)
        return start(name, dedup=dedup, timeout=timeout, replicas=replicas, env=env, progress=progress)


def status(names: list[str] | tuple[str, ...] | None = None) -> StatusTable:
    """Each service's state: ``print(status()["orders"])`` or ``for s in status().values()``."""
    result = StatusTable()
    for name in names or known_names():
        live = instances(name)
        if live:
            uptime = time.time() - live[0].started
            result[name] = Status(name, "running", tuple(s.pid for s in live), live[0].dedup, uptime)
        elif records.exit_codes.get(name) == -signal.SIGKILL:
            result[name] = Status(name, "killed")
        elif records.exit_codes.get(name, 0) not in (0, -signal.SIGTERM):
            result[name] = Status(name, f"exited with status {records.exit_codes[name]}")
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
        return f"{records.record_key(name, instance)}: no log yet"
    return "\n".join(text.splitlines()[-lines:])


def stop_all(timeout: float = DEFAULT_TIMEOUT, *, progress: Progress = quiet) -> list[str]:
    """Stop every service the kit started, this kernel's and earlier ones'; return their keys.

    Recorded services first; then any process the kit started whose record was lost. Holds every
    service's lock meanwhile (taken in name order), so no kernel starts one halfway through.
    """
    names = sorted(set(known_names()) | {s.name for s in records.kit_processes()})
    with contextlib.ExitStack() as held:
        for name in names:
            held.enter_context(records.exclusive(name, progress=progress))
        recorded = [s for name in names for s in instances(name)]
        pids = {s.pid for s in recorded}
        ended = records.stop_now(recorded + [s for s in records.kit_processes() if s.pid not in pids], timeout)
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
    names = dict.fromkeys(key.split("@")[0] for key in records.children)
    mine = [s for name in names for s in instances(name) if s.key in records.children and records.children[s.key].pid == s.pid]
    records.stop_now(mine, 5.0)


__all__ = [
    "ServiceError", "Service", "Status", "StatusTable", "NAMES",
    "start", "stop", "kill", "restart", "instances", "running", "status", "summary", "logs", "log_path",
    "running_pids", "stop_all", "known_names",
]
