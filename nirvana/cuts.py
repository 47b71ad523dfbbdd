"""Closing an svc process's broker connection as an operator would: ``rabbitmqctl close_connection``.

The broker then hands the connection's unacknowledged deliveries to the other consumers (chapter 5's
cut, chapter 7's chaos run). svc names each connection ``svc <service> pid <pid>``
(:func:`svc.consumer.connection_name`), so the connections of one process are found in one
``rabbitmqctl list_connections``; a replica started a moment ago has none yet, and
:func:`cut_replica` waits for one, with a deadline.
"""

import re
import subprocess
import time

from svc.consumer import connection_name

from . import rabbit, services, stack
from ._wait import POLL_SECONDS, poll, quiet
from .errors import WaitTimeout

# rabbitmqctl's schedulers are told not to busy-wait (nirvana.stack.rabbitmq.CTL_ERL_ARGS): at load ~10
# a call still took up to 3.3 s; the deadline leaves room for a much busier machine.
RABBITMQCTL_TIMEOUT = 120.0
CUT_TIMEOUT = 60.0      # seconds for a replica of the service to have its broker connection open


def _ctl(node: stack.RabbitNode | None, *command: str) -> str:
    """``rabbitmqctl -q <command>`` against ``node`` (default ``stack.rabbitmq_node()``); its output.
    Raises subprocess.CalledProcessError, or TimeoutExpired after RABBITMQCTL_TIMEOUT s."""
    return subprocess.run([*(node or stack.rabbitmq_node()).ctl(), "-q", *command], capture_output=True,
                          text=True, timeout=RABBITMQCTL_TIMEOUT, check=True).stdout


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
    connections = open_connections(service, node).get(pid, [])
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
    while True:
        live = {s.pid: s.instance for s in services.instances(service)}
        listed = open_connections(service, node)
        if candidates := sorted((live[pid], pid) for pid in live if listed.get(pid)):
            instance, pid = candidates[-1]
            for connection in listed[pid]:
                _ctl(node, "close_connection", connection, "closed by the chaos run")
            return len(listed[pid]), instance
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"gave up after {timeout:g} s waiting for a replica of {service} with a broker "
                              f"connection open: {len(live)} running, none listed by rabbitmqctl")
        time.sleep(POLL_SECONDS)


__all__ = ["cut_connection", "cut_replica", "open_connections", "RABBITMQCTL_TIMEOUT", "CUT_TIMEOUT"]
