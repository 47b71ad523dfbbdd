"""The stack: RabbitMQ, etcd, statsd, carbon and graphite-web as plain local processes.

``up`` starts each component that is not answering yet, from the machine's packages (see
``./kit setup``) with the configs of ``assets/``; its data, pid file and log live under the state
folder (:func:`nirvana.paths.state_dir`). A component that already answers (RabbitMQ on a CI
machine, a docker-compose stack) is used and never restarted or stopped. ``status`` tells what
answers, ``reset`` returns the demo to a clean start, ``down`` stops what the kit started.

Every call has a deadline and every error is one line saying what to do.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import psutil
import requests

from . import endpoints, paths

HOST = endpoints.HOST
SETUP_HINT = "run `./kit setup`"
DOCKER_HINT = "or use `docker compose up -d` (see README.md)"
PROBE_TIMEOUT = 1.0
STOP_TIMEOUT = 10.0

# JupyterLab is not part of the stack, but `./kit present` starts it the same way (pid file, log,
# own process group) so that `down` stops it too.
LAB_PORT = endpoints.LAB_PORT


class StackError(Exception):
    """A component cannot be started or reached; the message is one line saying what to do."""


class SettingError(StackError):
    """A setting (environment variable) has a value the kit refuses; exit status 2."""


Progress = Callable[[str], None]


# --------------------------------------------------------------------------- health probes

@dataclass(frozen=True)
class Probe:
    """The answer of a health check: ``up``, ``down`` (nothing listens) or ``unhealthy``."""

    state: str
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"


DOWN = Probe("down")


def _tcp_open(port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _probe_rabbitmq() -> Probe:
    if not _tcp_open(endpoints.AMQP_PORT):
        return DOWN
    import pika  # imported here: `python -m nirvana status` should not pay for it when unused

    params = pika.URLParameters(endpoints.AMQP_URL)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:  # any failure to open an AMQP connection is "not RabbitMQ, or not ready"
        return Probe("unhealthy", f"no AMQP connection ({type(exc).__name__})")
    return Probe("up")


def _probe_etcd() -> Probe:
    if not _tcp_open(endpoints.ETCD_PORT):
        return DOWN
    try:
        answer = requests.get(f"http://{endpoints.ETCD_ENDPOINT}/health", timeout=2)
        healthy = answer.status_code == 200 and answer.json().get("health") == "true"
    except (requests.RequestException, ValueError, AttributeError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "GET /health did not answer {\"health\":\"true\"}")


def _probe_statsd() -> Probe:
    try:
        with socket.create_connection((HOST, endpoints.STATSD_ADMIN_PORT), timeout=PROBE_TIMEOUT) as conn:
            conn.settimeout(1)
            conn.sendall(b"health\n")
            answer = conn.recv(64)
    except ConnectionRefusedError:
        return DOWN
    except OSError:
        answer = b""
    if answer.startswith(b"health: up"):
        return Probe("up")
    return Probe("unhealthy", "admin port did not answer `health: up`")


class _PlainUnpickler(pickle.Unpickler):
    """carbonlink answers in pickle; accept plain containers only, never a class."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _probe_carbon() -> Probe:
    if not _tcp_open(endpoints.CARBON_PORT):
        return DOWN
    request = pickle.dumps({"type": "cache-query", "metric": "nirvana.health"}, protocol=2)
    try:
        with socket.create_connection((HOST, endpoints.CARBON_QUERY_PORT), timeout=PROBE_TIMEOUT) as conn:
            conn.settimeout(2)
            conn.sendall(struct.pack("!L", len(request)) + request)
            header = _recv_exactly(conn, 4)
            body = _recv_exactly(conn, struct.unpack("!L", header)[0])
        answer = _PlainUnpickler(io.BytesIO(body)).load()
        healthy = isinstance(answer, dict) and "datapoints" in answer
    except (OSError, pickle.UnpicklingError, struct.error, EOFError, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "carbonlink (cache query) did not answer")


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _probe_graphite() -> Probe:
    if not _tcp_open(endpoints.GRAPHITE_PORT):
        return DOWN
    try:
        answer = requests.get(f"{endpoints.GRAPHITE_URL}/metrics/find",
                              params={"query": "*", "format": "treejson"}, timeout=3)
        healthy = answer.status_code == 200 and isinstance(answer.json(), list)
    except (requests.RequestException, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "/metrics/find did not answer 200 with JSON")


def _probe_lab() -> Probe:
    if not _tcp_open(LAB_PORT):
        return DOWN
    try:
        answer = requests.get(f"http://{HOST}:{LAB_PORT}/api", timeout=2)
        healthy = answer.status_code == 200 and "version" in answer.json()
    except (requests.RequestException, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "/api did not answer like Jupyter")


# --------------------------------------------------------------------------- components

@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    name: str
    address: str
    tcp_ports: tuple[int, ...]          # every TCP port it listens on (for "port held by ...")
    probe: Callable[[], Probe]
    launch: Callable[[Path], Launch]    # state dir -> how to start it
    needs: tuple[tuple[str, str], ...]  # (path that must exist, what provides it)
    deadline: float                     # seconds to become healthy after the start
    udp_ports: tuple[int, ...] = ()


def _render(template: str, target: Path, **values: object) -> Path:
    text = string.Template((paths.ASSETS / template).read_text()).substitute(
        {key: str(value) for key, value in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def _ports() -> dict[str, object]:
    return {name: getattr(endpoints, name) for name in dir(endpoints) if name.isupper()}


def _launch_rabbitmq(state: Path) -> Launch:
    base = state / "rabbitmq"
    env = {
        "RABBITMQ_NODENAME": "nirvana@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(endpoints.AMQP_PORT),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "ERL_EPMD_ADDRESS": HOST,
    }
    (base / "mnesia").mkdir(parents=True, exist_ok=True)
    (base / "log").mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user, who cannot write the state
    # folder; the script underneath runs the broker as whoever starts it.
    return Launch([_RABBITMQ_BIN], env)


_RABBITMQ_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _launch_etcd(state: Path) -> Launch:
    config = _render("etcd/etcd.conf.yml.in", state / "etcd.conf.yml",
                     DATA_DIR=state / "etcd", **_ports())
    return Launch(["etcd", "--config-file", str(config)])


def _statsd_main() -> Path:
    return paths.ROOT / ".tools" / "statsd" / "node_modules" / "statsd" / "stats.js"


def _launch_statsd(state: Path) -> Launch:
    return Launch(["node", str(_statsd_main()), str(paths.ASSETS / "statsd" / "config.js")])


def _graphite_storage(state: Path) -> Path:
    return state / "graphite"


def _launch_carbon(state: Path) -> Launch:
    storage = _graphite_storage(state)
    (storage / "whisper").mkdir(parents=True, exist_ok=True)
    config = _render("carbon/carbon.conf.in", state / "carbon" / "carbon.conf",
                     CONF_DIR=paths.ASSETS / "carbon", STORAGE_DIR=storage,
                     WHISPER_DIR=storage / "whisper", LOG_DIR=state / "carbon", **_ports())
    return Launch(["carbon-cache", "--config", str(config), "--pidfile", str(state / "carbon" / "carbon.pid"),
                   "--nodaemon", "--logfile", "-", "start"],
                  {"GRAPHITE_ROOT": str(storage)})


def _launch_graphite(state: Path) -> Launch:
    storage = _graphite_storage(state)
    (storage / "log").mkdir(parents=True, exist_ok=True)
    env = {
        # whitenoise from .tools/ (./kit setup): graphite-web serves its UI's static files through it
        "PYTHONPATH": os.pathsep.join([str(paths.ASSETS / "graphite"), str(paths.ROOT / ".tools" / "graphite-python")]),
        "DJANGO_SETTINGS_MODULE": "graphite.settings",
        "GRAPHITE_SETTINGS_MODULE": "nirvana_graphite_settings",
        "NIRVANA_GRAPHITE_STORAGE": str(storage),
        "NIRVANA_GRAPHITE_SECRET": secrets.token_hex(16),
        "NIRVANA_CARBONLINK": f"{HOST}:{endpoints.CARBON_QUERY_PORT}",
    }
    gunicorn = ["gunicorn", "--bind", f"{HOST}:{endpoints.GRAPHITE_PORT}", "--workers", "2",
                "--timeout", "30", "--graceful-timeout", "5", "graphite.wsgi:application"]
    # graphite-web keeps users and profiles in sqlite: create its tables once (under a second),
    # then exec, so the pid the kit records is gunicorn's.
    script = ('[ -s "$NIRVANA_GRAPHITE_STORAGE/graphite.db" ] || '
              '/usr/bin/python3 -m django migrate --noinput -v 0 || exit 1; exec "$@"')
    return Launch(["/bin/sh", "-c", script, "graphite-web", *gunicorn], env)


COMPONENTS: tuple[Component, ...] = (
    Component("rabbitmq", f"amqp://{HOST}:{endpoints.AMQP_PORT}",
              (endpoints.AMQP_PORT,), _probe_rabbitmq, _launch_rabbitmq,
              ((_RABBITMQ_BIN, "apt package rabbitmq-server"),), deadline=60),
    Component("etcd", f"http://{endpoints.ETCD_ENDPOINT}",
              (endpoints.ETCD_PORT, endpoints.ETCD_PEER_PORT), _probe_etcd, _launch_etcd,
              (("etcd", "apt package etcd-server"),), deadline=20),
    Component("carbon", f"{HOST}:{endpoints.CARBON_PORT} (cache query {endpoints.CARBON_QUERY_PORT})",
              (endpoints.CARBON_PORT, endpoints.CARBON_PICKLE_PORT, endpoints.CARBON_QUERY_PORT),
              _probe_carbon, _launch_carbon,
              (("carbon-cache", "apt package graphite-carbon"),), deadline=30),
    Component("statsd", f"udp://{HOST}:{endpoints.STATSD_PORT} (admin {endpoints.STATSD_ADMIN_PORT})",
              (endpoints.STATSD_ADMIN_PORT,), _probe_statsd, _launch_statsd,
              (("node", "Node.js (apt package nodejs)"), (str(_statsd_main()), "npm statsd@0.9.0 in .tools/")),
              deadline=15, udp_ports=(endpoints.STATSD_PORT,)),
    Component("graphite-web", endpoints.GRAPHITE_URL,
              (endpoints.GRAPHITE_PORT,), _probe_graphite, _launch_graphite,
              (("gunicorn", "apt package gunicorn"),
               ("/usr/lib/python3/dist-packages/graphite", "apt package graphite-web")), deadline=40),
)

def _launch_lab_elsewhere(state: Path) -> Launch:
    raise StackError("JupyterLab is started by `./kit present` (nirvana.stack.lab()), not by up")


LAB = Component("jupyterlab", f"http://{HOST}:{LAB_PORT}/lab", (LAB_PORT,), _probe_lab,
                _launch_lab_elsewhere, (), deadline=60)

BY_NAME = {component.name: component for component in COMPONENTS + (LAB,)}


def _select(names: Iterable[str]) -> list[Component]:
    names = list(names)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise StackError(f"unknown component {', '.join(unknown)}: choose from {', '.join(BY_NAME)}")
    return [BY_NAME[name] for name in names] if names else list(COMPONENTS)


# --------------------------------------------------------------------------- processes the kit started

def log_file(name: str) -> Path:
    return paths.log_dir() / f"{name}.log"


def _pid_file(name: str) -> Path:
    return paths.state_dir() / f"{name}.pid"


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def _kit_process(name: str) -> psutil.Process | None:
    """The live process the kit started for ``name``, or None (a stale pid file is removed).

    The pid file keeps the start time too, so a pid reused by another program is never taken
    for ours.
    """
    pid_file = _pid_file(name)
    try:
        record = json.loads(pid_file.read_text())
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) < 0.5 and _alive(process):
            return process
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, psutil.Error):
        pass
    pid_file.unlink(missing_ok=True)
    return None


def _start(component: Component, launch: Launch) -> psutil.Process:
    log = log_file(component.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **launch.env}
    # The venv's variables must not leak into the system python3 that runs carbon and graphite-web.
    for leaking in ("VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(leaking, None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(paths.ROOT / ".venv")))
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(launch.argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(launch.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env, cwd=paths.state_dir(), start_new_session=True)
    process = psutil.Process(child.pid)
    _pid_file(component.name).write_text(json.dumps(
        {"pid": child.pid, "create_time": process.create_time(), "argv": launch.argv}))
    return process


def _stop(process: psutil.Process, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the process group the kit started: TERM, then KILL at the deadline."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    members = everyone = [p for p in psutil.process_iter() if _pgid(p) == group]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while (members := [p for p in members if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not members:
            break
    for member in everyone:  # our own children would stay zombies in a long-lived kernel
        _reap(member)


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie: an exited process whose parent (often init here) has not reaped
    it yet holds no port and no file, so it counts as stopped."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- who holds a port

def port_holder(port: int, kind: str = "tcp") -> str | None:
    """The program listening on 127.0.0.1:``port`` (or on all interfaces), or None if free."""
    if kind == "tcp":
        wanted = lambda c: c.status == psutil.CONN_LISTEN  # noqa: E731
    else:
        wanted = lambda c: c.type == socket.SOCK_DGRAM  # noqa: E731
    try:
        connections = psutil.net_connections(kind=f"{kind}4")
    except psutil.AccessDenied:
        connections = []
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.laddr.ip in (HOST, "0.0.0.0") and wanted(conn):
            return _describe(conn.pid)
    if kind == "tcp" and _tcp_open(port, timeout=0.3):
        return "a program this user cannot see"
    return None


def _describe(pid: int | None) -> str:
    if pid is None:
        return "a program this user cannot see"
    try:
        return f"{psutil.Process(pid).name()} (pid {pid})"
    except psutil.Error:
        return f"pid {pid}"


def _held_error(component: Component, port: int, holder: str, kind: str = "tcp") -> StackError:
    return StackError(f"port {port}/{kind} that {component.name} needs is held by {holder}: "
                      f"stop that program or free the port, then run `./kit up` again")


# --------------------------------------------------------------------------- up

def up(progress: Progress = print, only: Iterable[str] = ()) -> list["Row"]:
    """Start every component that is not answering; wait for each with a deadline.

    Idempotent: a healthy component (started by the kit or found running) is left alone.
    Raises :class:`StackError` with a one-line message when something cannot start.
    """
    components = _select(only)
    state = paths.state_dir()
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    waiting: list[tuple[Component, psutil.Process, float]] = []
    for component in components:
        probe = component.probe()
        ours = _kit_process(component.name)
        if probe.up:
            progress(f"{component.name:<13} up, {'started by the kit' if ours else 'found running'} "
                     f"at {component.address}")
            continue
        if ours is not None:  # ours and still starting (another `up` started it a moment ago)
            waiting.append((component, ours, time.monotonic()))
            continue
        _check_free(component, probe)
        _check_installed(component)
        process = _start(component, component.launch(state))
        progress(f"{component.name:<13} starting (log {_display(log_file(component.name))})")
        waiting.append((component, process, time.monotonic()))
    for component, process, started in waiting:
        _wait_healthy(component, process, started, progress)
    return status(components=[c.name for c in components])


def _check_free(component: Component, probe: Probe) -> None:
    for port in component.tcp_ports:
        holder = port_holder(port)
        if holder:
            raise _held_error(component, port, holder)
    for port in component.udp_ports:
        holder = port_holder(port, "udp")
        if holder:
            raise _held_error(component, port, holder, "udp")
    if probe.state == "unhealthy":  # answers, but not as this component: held by something unseen
        raise StackError(f"{component.name} at {component.address} answers but is not healthy "
                         f"({probe.detail}): stop the program on that port, then run `./kit up` again")


def _check_installed(component: Component) -> None:
    for needed, provider in component.needs:
        found = Path(needed).exists() if os.sep in needed else shutil.which(needed)
        if not found:
            raise StackError(f"{component.name} cannot start: {needed} is missing ({provider}): "
                             f"{SETUP_HINT}, {DOCKER_HINT}")


def _wait_healthy(component: Component, process: psutil.Process, started: float, progress: Progress) -> None:
    deadline = started + component.deadline
    next_note = time.monotonic() + 5
    while True:
        probe = component.probe()
        if probe.up:
            progress(f"{component.name:<13} up in {time.monotonic() - started:.1f} s at {component.address}")
            return
        if not _alive(process):
            _reap(process)
            _pid_file(component.name).unlink(missing_ok=True)
            log = log_file(component.name)
            raise StackError(f"{component.name} died on start; its log {_display(log)} ends: {_tail(log)}")
        now = time.monotonic()
        if now >= deadline:
            raise StackError(f"{component.name} not healthy after {component.deadline:.0f} s "
                             f"({probe.detail or 'not answering'}); see {_display(log_file(component.name))}: "
                             f"{_tail(log_file(component.name))}")
        if now >= next_note:
            progress(f"{component.name:<13} still waiting ({now - started:.0f} s of {component.deadline:.0f} s)")
            next_note = now + 5
        time.sleep(0.2)


def _reap(process: psutil.Process) -> None:
    try:
        os.waitpid(process.pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- status

@dataclass(frozen=True)
class Row:
    """One component as ``status`` sees it."""

    name: str
    address: str
    state: str        # up | down | unhealthy
    origin: str       # "started by kit" | "found running" | ""
    log: str          # the log file when the kit started it
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == "up"


def status(components: Iterable[str] = ()) -> list[Row]:
    rows = []
    for component in _select(components):
        probe = component.probe()
        ours = _kit_process(component.name)
        detail = probe.detail
        if probe.state == "unhealthy" and ours is None:
            holder = next(filter(None, (port_holder(port) for port in component.tcp_ports)), None)
            detail = f"held by {holder}" if holder else detail
        if ours is not None:
            origin = "started by kit"
        elif probe.state != "down":
            origin = "found running"
        else:
            origin = ""
        log = _display(log_file(component.name)) if ours is not None or log_file(component.name).exists() else ""
        rows.append(Row(component.name, component.address, probe.state, origin, log, detail))
    return rows


def render_status(rows: Iterable[Row]) -> str:
    """A plain text table with stable columns (used by the CLI and the notebooks)."""
    header = ("component", "address", "state", "origin", "log")
    lines = [header] + [(r.name, r.address, r.state + (f" ({r.detail})" if r.detail and not r.healthy else ""),
                         r.origin or "-", r.log or "-") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


# --------------------------------------------------------------------------- down

def down(progress: Progress = print, only: Iterable[str] = ()) -> list[str]:
    """Stop what the kit started (by process group) and only that. Returns the names stopped."""
    stopped = []
    if not only:
        # the services consume from the stack: stop them first, so none is left orphaned to
        # compete for the queues with the next run
        from . import services

        for name in services.stop_all():
            progress(f"{name:<13} stopped (svc)")
    components = _select(only) if only else [*COMPONENTS, LAB]
    for component in reversed(components):  # JupyterLab first, then the stack in reverse start order
        process = _kit_process(component.name)
        if process is None:
            probe = component.probe()
            if probe.state != "down":
                progress(f"{component.name:<13} left running (not started by the kit)")
            continue
        _stop(process)
        _pid_file(component.name).unlink(missing_ok=True)
        stopped.append(component.name)
        progress(f"{component.name:<13} stopped")
    return stopped


# --------------------------------------------------------------------------- reset

def etcd_prefix() -> str:
    """The kit's etcd prefix: ETCD_PREFIX as the services read it, default ``/nirvana``.

    Checked as svc checks it, so ``reset`` can never be pointed at the root of etcd (``/``) or at
    anything but one absolute key prefix.
    """
    from svc.config import PREFIX_RE

    prefix = os.environ.get("ETCD_PREFIX") or "/nirvana"
    if not PREFIX_RE.fullmatch(prefix.rstrip("/") or "/"):
        raise SettingError(f"ETCD_PREFIX={prefix!r} is not an absolute key prefix such as /nirvana: "
                         "reset deletes every key under it, so fix or unset ETCD_PREFIX")
    return prefix.rstrip("/")


def kit_queues(exchange: str = "events") -> list[str]:
    """The queues that belong to the kit: the talk's services, any service the kit has started,
    and the dead letters. Nothing is guessed from names: on a shared RabbitMQ another
    application's ``events.*`` queue is not the kit's to purge."""
    from svc import topology

    from . import services

    names = [topology.queue_name(service, exchange=exchange)
             for service in (*topology.DEFAULT_SERVICES, *services.known_names())]
    names.append(topology.dead_letter_queue(exchange))
    return sorted(set(names))


def purge_queues(queues: Iterable[str]) -> dict[str, int]:
    """Purge each queue that exists; returns {queue: messages removed}. Missing queues are skipped."""
    import pika

    params = pika.URLParameters(endpoints.AMQP_URL)
    params.socket_timeout = 5
    params.connection_attempts = 1
    removed: dict[str, int] = {}
    connection = pika.BlockingConnection(params)
    try:
        for queue in queues:
            # A passive declare of a missing queue closes the channel: one channel per queue.
            channel = connection.channel()
            try:
                channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                continue
            removed[queue] = channel.queue_purge(queue).method.message_count
            channel.close()
    finally:
        connection.close()
    return removed


def etcd_client():
    """svc's etcd client (gRPC: Debian's etcd has no JSON gateway) on the kit's endpoint."""
    from svc import Etcd

    return Etcd([(HOST, endpoints.ETCD_PORT)], timeout=5)


def _with_etcd(call):
    client = etcd_client()
    try:
        return call(client)
    finally:
        client.close()


def delete_etcd_prefix(prefix: str | None = None) -> int:
    """Delete every etcd key under ``prefix/`` (default the kit's); returns how many."""
    return _with_etcd(lambda etcd: etcd.delete_prefix((prefix or etcd_prefix()) + "/"))


def count_etcd_prefix(prefix: str | None = None) -> int:
    return _with_etcd(lambda etcd: etcd.count_prefix((prefix or etcd_prefix()) + "/"))


def whisper_dir() -> Path:
    return _graphite_storage(paths.state_dir()) / "whisper"


def whisper_files() -> list[Path]:
    return sorted(whisper_dir().rglob("*.wsp")) if whisper_dir().exists() else []


def reset(progress: Progress = print, exchange: str = "events") -> None:
    """Return the stack to a clean demo state, touching nothing but the kit's own data.

    Purges the kit's queues, deletes the etcd keys under the kit's prefix, and deletes the whisper
    files of the native stack (so a changed retention takes effect on the next point).
    """
    prefix = etcd_prefix()   # a bad ETCD_PREFIX stops the reset before anything is touched
    rows = {row.name: row for row in status()}
    if rows["rabbitmq"].healthy:
        removed = purge_queues(kit_queues(exchange))
        progress(f"rabbitmq      purged {', '.join(f'{q} ({n})' for q, n in removed.items()) or 'no kit queue'}")
    else:
        progress("rabbitmq      not answering: nothing purged (start it with `./kit up`)")
    if rows["etcd"].healthy:
        progress(f"etcd          deleted {delete_etcd_prefix(prefix)} keys under {prefix}/")
    else:
        progress("etcd          not answering: no keys deleted (start it with `./kit up`)")
    if rows["carbon"].origin == "found running":
        progress("graphite      found running outside the kit (docker-compose?): its whisper files are not "
                 "the kit's to delete; `docker compose down -v` clears them")
    files = whisper_files()
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted((p for p in whisper_dir().rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    if files:
        progress(f"graphite      deleted {len(files)} whisper files under {_display(whisper_dir())}")


# --------------------------------------------------------------------------- JupyterLab (./kit present)

def lab_token_file() -> Path:
    return paths.state_dir() / "jupyterlab.token"


def lab_url() -> str:
    token = lab_token_file().read_text().strip() if lab_token_file().exists() else ""
    return f"http://{HOST}:{LAB_PORT}/lab" + (f"?token={token}" if token else "")


def lab(open_browser: bool = True, progress: Progress = print, fresh: bool = False) -> str:
    """Start JupyterLab on a copy of the chapters under state/present/ in the background (once);
    returns its URL. The checkout's notebooks stay as they are (see :mod:`nirvana.present`)."""
    from . import present

    if _probe_lab().up:
        if _kit_process(LAB.name) is None:
            progress(f"JupyterLab found running on port {LAB_PORT} (not the kit's); its URL has its own token")
            return f"http://{HOST}:{LAB_PORT}/lab"
        if fresh:
            progress(f"copied again: {', '.join(present.prepare(fresh=True)) or 'nothing'}")
        return lab_url()
    if _kit_process(LAB.name) is None:
        holder = port_holder(LAB_PORT)
        if holder:
            raise _held_error(LAB, LAB_PORT, holder)
        paths.state_dir().mkdir(parents=True, exist_ok=True)
        copied = present.prepare(fresh=fresh)
        progress(f"presenting a copy of the chapters in {_display(present.present_dir())}"
                 + (f" (copied: {', '.join(copied)})" if copied else ""))
        token = secrets.token_hex(16)
        lab_token_file().write_text(token)
        lab_token_file().chmod(0o600)
        argv = present.lab_command(present.present_dir(), HOST, LAB_PORT, open_browser=open_browser)
        if not Path(argv[0]).exists():
            raise StackError(f"JupyterLab is not installed in .venv: {SETUP_HINT}")
        settings = paths.state_dir() / "jupyterlab" / "settings"
        process = _start(LAB, Launch(argv, present.lab_environment(token, settings)))
        progress(f"{LAB.name:<13} starting (log {_display(log_file(LAB.name))})")
    else:
        process = _kit_process(LAB.name)
    _wait_healthy(LAB, process, time.monotonic(), progress)
    return lab_url()
