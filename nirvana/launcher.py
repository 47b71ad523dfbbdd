"""The one launcher: everything the kit starts is started, awaited and stopped here.

The stack's components and cluster members (:mod:`nirvana.stack.running`), JupyterLab, the
``svc`` services (:mod:`nirvana.services`), the throwaway etcd and RabbitMQ nodes
(:mod:`nirvana.own_etcd`, :mod:`nirvana.own_rabbitmq`) and the tests' worlds
(:mod:`nirvana.testing`) each say what to run (:class:`Command`: the argv, its environment, its
log, its start record) and how to know it is ready (a probe and a deadline); this module does
the rest the same way for all of them, in the manner of mirakuru's ``Executor``:

- :func:`start`: in a session of its own (its process group id is its pid, so one signal
  reaches a shell and what it became, a gunicorn and its workers), stdin from /dev/null, stdout
  and stderr to the log, the start record written (:mod:`nirvana.processes`: pid and start time,
  so a later interpreter can find it and a reused pid is never taken for it);
- :func:`wait_ready`: the probe polled (:func:`nirvana._wait.poll`: it says what it waits for)
  until ready, the deadline, or the process's exit (:class:`Exited`);
- :func:`stop` (SIGTERM to the whole group, SIGKILL at the deadline) and :func:`kill` (SIGKILL).

Why not mirakuru underneath (weighed: mirakuru 3.1.0, PyPI): its executor keeps the
``subprocess.Popen`` it started and stops only that, where the kit stops from a later interpreter
what an earlier one started (start records); it finds a process's leftovers by scanning ``ps``
for an environment variable, where the kit stops whole process groups; and its readiness wait
raises a bare TimeoutExpired that does not say what it saw. What would remain of it is the loop :func:`wait_ready` already is.

The one TCP probe (:func:`tcp_open`) and the one free-port finder (:func:`free_ports`) are here too.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import psutil

from . import endpoints, paths, processes
from ._wait import POLL_SECONDS, Progress, poll, quiet
from .errors import KitError

T = TypeVar("T")

HOST = "127.0.0.1"
PROBE_TIMEOUT = 1.0   # seconds: everything answers on loopback at once or not at all
STOP_TIMEOUT = 10.0   # seconds for a process group to end on SIGTERM before SIGKILL
VENV = paths.ROOT / ".venv"


class Exited(KitError):
    """A process exited while the kit waited for it to become ready; ``launched`` is which."""

    def __init__(self, launched: "Launched", what: str) -> None:
        self.launched = launched
        super().__init__(f"{launched.name} exited with status {launched.returncode} while waiting for {what}")


def tcp_open(port: int, host: str = HOST, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when something accepts a TCP connection on ``host``:``port`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_RANGE = (32768, 60999)   # Linux's default ip_local_port_range (ip-sysctl.rst)
POOL_SIZE = 8192   # ports: how many below the ephemeral range free_ports picks from
_handed_out: set[int] = set()   # this process's picks: never one twice


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """(first, last) of the ports Linux hands out as source ports of outgoing connections and to
    bind(0) (``net.ipv4.ip_local_port_range``, Documentation/networking/ip-sysctl.rst); Linux's
    default (32768, 60999) when ``source`` cannot be read."""
    try:
        first, last = (int(word) for word in source.read_text().split())
        return first, last
    except (OSError, ValueError):
        return LINUX_EPHEMERAL_RANGE


def port_pool(ephemeral: tuple[int, int]) -> range:
    """The ports :func:`free_ports` picks from: the POOL_SIZE just below the ephemeral range, or just
    above it when those would reach under 10,000 (well-known services' ports, the privileged ones
    under 1024), or, with neither, the range itself (a port could then still be taken by a client
    before a server binds it)."""
    first, last = ephemeral
    if first - POOL_SIZE >= 10000:
        return range(first - POOL_SIZE, first)
    if last + POOL_SIZE <= 65535:
        return range(last + 1, last + 1 + POOL_SIZE)
    return range(max(first, 1024), last + 1)


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct TCP ports on ``host`` that nothing holds right now and no outgoing
    connection can take before a server binds them.

    A port from bind(0) lies in the kernel's ephemeral range (:func:`ephemeral_range`), which the
    kernel also hands out as the source port of every client connection: a server binding it
    seconds later (a RabbitMQ node booting under load) could find it taken by one of the tests'
    own connections (``could_not_start_listener ... eaddrinuse``). So the ports are drawn at random
    from :func:`port_pool`, outside that range, each checked by a bind, none of the stack's fixed
    ports (:func:`nirvana.endpoints.fixed_ports`) and none this process handed out
    before. Raises :class:`nirvana.errors.KitError` when the pool has fewer than ``count`` free.
    """
    fixed, pool = endpoints.fixed_ports(), port_pool(ephemeral_range())
    candidates = [port for port in pool if port not in fixed and port not in _handed_out]
    random.SystemRandom().shuffle(candidates)
    ports = []
    for port in candidates:
        if _bindable(port, host):
            ports.append(port)
            if len(ports) == count:
                _handed_out.update(ports)
                return ports
    raise KitError(f"fewer than {count} free TCP ports on {host} in {pool}: "
                   "stop what holds them, or widen net.ipv4.ip_local_port_range's gap below it")


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing holds right now (:func:`free_ports`)."""
    return free_ports(1, host)[0]


def environment(extra: Mapping[str, str] | None = None, *, system: bool = False,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with ``extra`` added.

    ``system``: for the machine's programs (etcd, RabbitMQ, epmd, carbon and graphite-web under the
    system python3, JupyterLab started by its absolute path): the kit's virtual environment is
    taken out (VIRTUAL_ENV, PYTHONHOME, ``.venv/bin`` on PATH), so a ``#!/usr/bin/env python3``
    among them never runs the kit's interpreter without the system's packages.
    """
    env = {**(os.environ if base is None else base), **(extra or {})}
    if system:
        for leaking in ("VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(leaking, None)
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(VENV)))
    return env


@dataclass(frozen=True)
class Command:
    """What to start: ``argv`` with the full environment ``env``, in ``cwd``, output to ``log``.

    ``append`` keeps the log's earlier runs (a dated header line first unless ``header`` is
    False: a log a test reads line by line holds only what the process wrote); ``record`` is the start
    record's path (none: the caller keeps the handle); ``fields`` more of the record's fields;
    ``die_with_starter`` has Linux SIGKILL it when the starting thread ends
    (:func:`nirvana.processes.death_signal`: ``argv`` runs under setpriv(1), same pid).
    """

    argv: Sequence[str]
    log: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = paths.ROOT
    name: str = ""
    append: bool = False
    header: bool = True
    record: Path | None = None
    fields: Mapping[str, object] = field(default_factory=dict)
    die_with_starter: bool = False


@dataclass
class Launched:
    """A process the launcher started (``popen`` set) or found again from its start record (None)."""

    name: str
    pid: int
    started: float                     # its start time, seconds since the epoch (psutil's)
    log: Path | None = None
    record: Path | None = None
    popen: subprocess.Popen | None = None

    @property
    def returncode(self) -> int | None:
        """Its exit status when it was our child and has exited (negative: the signal), else None."""
        return self.popen.poll() if self.popen is not None else None

    def alive(self) -> bool:
        """Running and not a zombie (a child of ours that exited is collected here)."""
        if self.popen is not None:
            return self.popen.poll() is None
        found = processes.recorded_process({"pid": self.pid, "started": self.started})
        if found is None:
            processes.reap(self.pid)
        return found is not None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to its whole process group (SIGSTOP freezes it, SIGCONT thaws it)."""
        if self.alive():
            processes.signal_group(self.pid, signal.Signals(signum))

    def tail(self, lines: int = 3) -> str:
        """The last ``lines`` lines of its log on one line, for an error message."""
        return tail(self.log, lines) if self.log else "(no log)"


def start(command: Command) -> Launched:
    """Start ``command`` in a session of its own, its start record written when it has one.

    Raises OSError (FileNotFoundError: the program is not there) when it cannot be executed.
    """
    command.log.parent.mkdir(parents=True, exist_ok=True)
    with open(command.log, "ab" if command.append else "wb") as out:
        if command.append and command.header:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command.argv)}\n".encode())
            out.flush()
        # its own session: a stop reaches all of it, a Ctrl-C in Jupyter or the terminal none of it;
        # never a preexec_fn: it forks the whole starter and runs its at-fork handlers (death_signal says why)
        prefix = processes.death_signal() if command.die_with_starter else []
        child = subprocess.Popen([*prefix, *command.argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=dict(command.env), cwd=command.cwd, start_new_session=True)
    try:
        started = psutil.Process(child.pid).create_time()
    except psutil.Error:   # gone already: it is a zombie of ours until reaped, so only on an odd platform
        started = time.time()
    launched = Launched(command.name or Path(command.argv[0]).name, child.pid, started, command.log,
                        command.record, child)
    if command.record is not None:
        # "create_time" too: a kit from before nirvana.processes may share the state folder and reads only that
        processes.write_record(command.record, {"pid": child.pid, "started": started, "create_time": started,
                                                "argv": list(command.argv), **command.fields})
    return launched


def found(name: str, record: Path, log: Path | None = None) -> Launched | None:
    """The live process a start record names (written by any interpreter), or None; a stale record
    (the process exited, or its pid now belongs to another program) is removed."""
    data = processes.read_record(record)
    process = processes.recorded_process(data) if data else None
    if process is None:
        record.unlink(missing_ok=True)
        return None
    return Launched(name, process.pid, float(data["started"]), log, record)


def wait_ready(read: Callable[[], T], done: Callable[[T], bool], *, waiting: Iterable[Launched], what: str,
               timeout: float, progress: Progress = quiet, describe: Callable[[T], str] = str,
               interval: float = POLL_SECONDS) -> T:
    """Poll ``read()`` until ``done(value)`` while every one of ``waiting`` runs; that value.

    Raises :class:`Exited` (naming the first of ``waiting`` that exited) as soon as one exits,
    and :class:`nirvana.errors.WaitTimeout` after ``timeout`` seconds, naming ``what`` and the
    last value seen. ``progress`` is told when the wait starts and every few seconds.
    """
    waiting = list(waiting)

    def look() -> tuple[T, Launched | None]:
        value = read()
        return value, (None if done(value) else next((p for p in waiting if not p.alive()), None))

    value, dead = poll(look, lambda seen: done(seen[0]) or seen[1] is not None, what=what, timeout=max(timeout, 0),
                       progress=progress, describe=lambda seen: describe(seen[0]), interval=interval)
    if dead is not None:
        raise Exited(dead, what)
    return value


def stop(launched: Iterable[Launched], timeout: float = STOP_TIMEOUT, *,
         kill_wait: float = processes.KILL_WAIT) -> dict[int, str]:
    """SIGTERM each one's whole group, SIGKILL what is left after ``timeout`` seconds (0: SIGKILL at
    once, a crash); their start records removed. How each ended by pid: "stopped" or "killed"."""
    launched = list(launched)
    ended = processes.stop_groups([p.pid for p in launched], timeout, kill_wait=kill_wait,
                                  reaper=lambda pid: _reap(launched, pid))
    for one in launched:
        if one.record is not None:
            one.record.unlink(missing_ok=True)
    return ended


def kill(launched: Iterable[Launched], *, kill_wait: float = processes.KILL_WAIT) -> dict[int, str]:
    """SIGKILL to each one's whole group (a crash, no goodbye); as :func:`stop` with no grace."""
    return stop(launched, 0, kill_wait=kill_wait)


def _reap(launched: list[Launched], pid: int) -> None:
    """Collect ``pid`` if it is our child (through its Popen, so its exit status is kept)."""
    for one in launched:
        if one.pid == pid and one.popen is not None:
            one.popen.poll()
            return
    processes.reap(pid)


def tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of the log at ``path`` on one line, for an error message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def display(path: Path) -> str:
    """A path as the user reads it: relative to the kit's root when it is inside."""
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)


__all__ = ["Command", "Launched", "Exited", "start", "found", "wait_ready", "stop", "kill", "environment",
           "tcp_open", "free_port", "free_ports", "tail", "display", "HOST"]
