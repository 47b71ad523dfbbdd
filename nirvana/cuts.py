"""Closing an svc process's broker connection as an operator would (``rabbitmqctl close_connection``),
and restarting the kit's own broker (``rabbitmqctl stop_app``, ``start_app``).

A user who may not run the broker's ``rabbitmqctl`` (a normal user beside the system's RabbitMQ:
"Only root or rabbitmq should run rabbitmqctl", the node's cookie readable by ``rabbitmq`` only)
closes it at the TCP level instead: the kit started the svc process, so it may take a copy of the
process's socket (``pidfd_getfd(2)``, Linux 5.6+, same user) and shut it down. The broker sees the
connection end and hands its unacknowledged deliveries to the other consumers, as after
``close_connection``; svc sees its connection lost instead of closed by the broker, and reconnects.

The broker then hands the connection's unacknowledged deliveries to the other consumers (chapter 5's
cut, chapter 7's chaos run). svc names each connection ``svc <service> pid <pid>``
(:func:`svc.consumer.connection_name`), so the connections of one process are found in one
``rabbitmqctl list_connections``; a replica started a moment ago has none yet, and
:func:`cut_replica` waits for one, with a deadline.
"""

import ctypes
import os
import re
import socket
import subprocess
import time
from urllib.parse import urlsplit

from svc import amqp
from svc.consumer import connection_name
from svc.errors import SvcError

from . import rabbit, services, settings, stack
from ._wait import poll, quiet
from .errors import KitError, WaitTimeout

# rabbitmqctl's schedulers are told not to busy-wait (nirvana.stack.rabbitmq.CTL_ERL_ARGS): at load ~10
# a call still took up to 3.3 s; the deadline leaves room for a much busier machine.
RABBITMQCTL_TIMEOUT = 120.0
CUT_TIMEOUT = 60.0      # seconds for a replica of the service to have its broker connection open
BROKER_DOWN = 2.0       # seconds the restarted broker stays stopped: clients find the port closed meanwhile
BROKER_BACK_TIMEOUT = 60.0   # seconds for the broker to take AMQP connections again after start_app


def _ctl(node: stack.RabbitNode | None, *command: str) -> str:
    """``rabbitmqctl -q <command>`` against ``node`` (default ``stack.rabbitmq_node()``); its output.
    Raises subprocess.CalledProcessError, or TimeoutExpired after RABBITMQCTL_TIMEOUT s."""
    return subprocess.run([*(node or stack.rabbitmq_node()).ctl(), "-q", *command], capture_output=True,
                          text=True, timeout=RABBITMQCTL_TIMEOUT, check=True).stdout


PIDFD_GETFD = 438     # the syscall's number, the same on every Linux architecture (5.6+)
REFUSED = ("Only root or rabbitmq", "Authentication failed", "Permission denied", "cookie")


def rabbitmqctl_refused(error: Exception) -> bool:
    """True when ``error`` (from :func:`_ctl`) says this user may not run rabbitmqctl against the
    node (not installed, not permitted, the node's cookie unreadable), not that the node is down."""
    if isinstance(error, (FileNotFoundError, PermissionError)):
        return True
    text = f"{getattr(error, 'stderr', '') or ''}{getattr(error, 'stdout', '') or ''}"
    # 127: ``env`` found no rabbitmqctl on this user's PATH (Debian puts it in /usr/sbin)
    return isinstance(error, subprocess.CalledProcessError) and (error.returncode == 127 or any(word in text for word in REFUSED))


def _broker_port() -> int:
    return urlsplit(settings.current().amqp_url).port or 5672


def _socket_copies(pid: int, port: int) -> list[socket.socket]:
    """Copies (pidfd_getfd) of process ``pid``'s TCP sockets connected to ``port``; the caller
    closes them. Raises OSError when the process is gone or may not be looked into (another
    user's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    continue
            except OSError:
                continue   # closed meanwhile
            copy = libc.syscall(PIDFD_GETFD, pidfd, int(fd), 0)
            if copy < 0:
                error = ctypes.get_errno()
                raise OSError(error, f"pidfd_getfd of pid {pid}'s fd {fd}: {os.strerror(error)}")
            sock = socket.socket(fileno=copy)
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername()[1] == port:
                    found.append(sock)
                    continue
            except OSError:
                pass   # not connected, not TCP
            sock.close()
    finally:
        os.close(pidfd)
    return found


def broker_sockets(pid: int) -> int:
    """How many TCP connections to the kit's broker port process ``pid`` holds (0 when it is gone)."""
    try:
        copies = _socket_copies(pid, _broker_port())
    except (ProcessLookupError, FileNotFoundError):
        return 0
    for copy in copies:
        copy.close()
    return len(copies)


def drop_connection(pid: int) -> int:
    """Shut down process ``pid``'s TCP connections to the kit's broker (without rabbitmqctl: a
    copy of each socket through pidfd_getfd, shut down both ways); how many. Raises OSError when
    the process may not be looked into (another user's, Linux older than 5.6)."""
    copies = _socket_copies(pid, _broker_port())
    for copy in copies:
        try:
            copy.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass   # ended meanwhile
        copy.close()
    return len(copies)


def open_connections(service: str, node: stack.RabbitNode | None = None) -> dict[int, list[str]]:
    """{svc process pid: [its broker connections' Erlang pids]} for ``service``'s processes with a
    connection open on the broker, from one ``rabbitmqctl list_connections`` (svc names each
    connection ``svc <service> pid <pid>``). Raises as :func:`_ctl`."""
    named = re.compile(f'"{re.escape(connection_name(service, 0)[:-1])}([0-9]+)"')
    found: dict[int, list[str]] = {}
    for line in _ctl(node, "list_connections", "pid", "client_properties").splitlines():
        if match := named.search(line):
            found.setdefault(int(match[1]), []).append(line.split("\t", 1)[0])
    return found


def cut_connection(service: str, pid: int, node: stack.RabbitNode | None = None) -> int:
    """Close the broker connections of one svc process with ``rabbitmqctl close_connection`` (as
    an operator would); how many were closed (0 when it has none open now).

    ``node`` is the RabbitMQ node to address (default: ``stack.rabbitmq_node()``, the kit's own
    node when the kit's state folder names it, else the machine's). A caller that moved the state
    folder (NIRVANA_STATE) must pass the node found before the move: the moved folder holds no
    pid file of the kit's node, and the machine's rabbitmqctl would address the wrong node.
    Raises subprocess.CalledProcessError when rabbitmqctl fails, TimeoutExpired as :func:`_ctl`.
    """
    try:
        connections = open_connections(service, node).get(pid, [])
    except (subprocess.CalledProcessError, OSError) as error:
        if not rabbitmqctl_refused(error):
            raise
        return drop_connection(pid)   # rabbitmqctl is not this user's: at the TCP level
    for connection in connections:
        _ctl(node, "close_connection", connection, "closed by the chaos run")
    return len(connections)


def cut_replica(service: str, *, exchange: str | None = None, replicas: int = 1, node: stack.RabbitNode | None = None,
                timeout: float = CUT_TIMEOUT) -> tuple[int, int]:
    """Close the broker connection of one running replica of ``service``: the highest-numbered one
    whose connection is open (a replica started a moment ago has none yet, so first wait, through
    the queue's consumer count, for ``replicas`` consumers; ``exchange`` default the kit's).
    (connections closed, replica number).

    Raises WaitTimeout when no replica had a connection open within ``timeout`` seconds, and
    rabbitmqctl's errors as :func:`cut_connection`.
    """
    deadline = time.monotonic() + timeout
    try:   # cheap (one AMQP call a poll): every replica consuming, so each has its connection
        poll(lambda: rabbit.queue_counts(rabbit.queue_of(service, exchange)).consumers, lambda n: n >= replicas,
             what=f"{replicas} replicas of {service} consuming", timeout=timeout, progress=quiet)
    except TimeoutError:
        pass   # fewer (a replica killed meanwhile): cut one of those whose connection is open
    by_socket = False

    def look() -> tuple[dict[int, int], dict[int, list[str]]]:
        """(the live replicas' instance numbers by pid, their open connections by pid)."""
        nonlocal by_socket
        live = {s.pid: s.instance for s in services.instances(service)}
        if not by_socket:
            try:
                return live, open_connections(service, node)
            except (subprocess.CalledProcessError, OSError) as error:
                if not rabbitmqctl_refused(error):
                    raise
                by_socket = True   # rabbitmqctl is not this user's: the processes' own sockets
        return live, {pid: ["socket"] for pid in live if broker_sockets(pid)}

    def candidates(seen: tuple[dict[int, int], dict[int, list[str]]]) -> list[tuple[int, int]]:
        live, listed = seen
        return sorted((live[pid], pid) for pid in live if listed.get(pid))

    try:
        live, listed = poll(look, lambda seen: bool(candidates(seen)), what=f"a replica of {service} with a broker "
                            "connection open", timeout=max(deadline - time.monotonic(), 0), progress=quiet)
    except WaitTimeout:
        raise WaitTimeout(f"gave up after {timeout:g} s waiting for a replica of {service} with a broker "
                          f"connection open: {len(look()[0])} running, none listed by rabbitmqctl") from None
    instance, pid = candidates((live, listed))[-1]
    if by_socket:
        return drop_connection(pid), instance
    for connection in listed[pid]:
        _ctl(node, "close_connection", connection, "closed by the chaos run")
    return len(listed[pid]), instance


def restart_broker(node: stack.RabbitNode, *, down: float = BROKER_DOWN, url: str | None = None) -> float:
    """Stop the RabbitMQ application of ``node`` (``rabbitmqctl stop_app``: every connection closed,
    the AMQP port closed), wait ``down`` seconds, start it again (``start_app``: durable queues and
    persistent messages recovered from disk, unacknowledged deliveries back in their queues), and
    wait until it takes an AMQP connection at ``url`` (default the kit's AMQP_URL). Seconds from
    the stop until it answered again.

    Only the kit's own node (``node.started_by_kit``): a RabbitMQ found running (the machine's, a
    container) is never stopped, KitError says so. Raises subprocess errors as :func:`_ctl`, and
    WaitTimeout when it does not answer within BROKER_BACK_TIMEOUT seconds.
    """
    if not node.started_by_kit:
        raise KitError("the RabbitMQ answering is not the kit's own node (the machine's, or a container): the kit "
                       "never stops a broker it did not start; run in a network namespace where `./kit up` starts its own")
    url = url or settings.current().amqp_url
    stopped = time.monotonic()
    _ctl(node, "stop_app")
    time.sleep(down)
    _ctl(node, "start_app")

    def answers() -> bool:
        try:
            amqp.connect(url, 2.0, name="nirvana chaos probe").close()
            return True
        except (SvcError, *amqp.BROKER_ERRORS):
            return False
    poll(answers, bool, what="RabbitMQ taking connections again after start_app", timeout=BROKER_BACK_TIMEOUT,
         progress=quiet)
    return time.monotonic() - stopped


__all__ = ["cut_connection", "cut_replica", "open_connections", "drop_connection", "broker_sockets",
           "rabbitmqctl_refused", "restart_broker", "RABBITMQCTL_TIMEOUT", "CUT_TIMEOUT", "BROKER_DOWN"]
