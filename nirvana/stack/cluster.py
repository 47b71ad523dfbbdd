"""A cluster of the kit's own: three etcd members and three RabbitMQ nodes (issue 12).

``./kit up --cluster`` runs :func:`up` on :func:`.shape.kit_shape` and records the shape;
``status`` shows each member with its role, ``down`` stops them all. A chapter or a test that
needs a cluster beside the single-node stack uses a :func:`.shape.private_shape` the same way.

Each member runs in its own process group with a start record (``<name>.pid``) and a log
(``logs/<name>.log``) in the shape's folder, so a member can be killed, stopped and started on
its own (the faults of chapter 09 and tests/test_cluster.py) and ``down`` finds them all again.
"""

from __future__ import annotations

import time
from pathlib import Path

from svc import amqp
from svc.errors import SvcError

from .. import launcher
from .._wait import poll, quiet
from ..errors import StackError, WaitTimeout
from ..launcher import Launched, display
from . import members as m
from . import running
from .component import Launch, Probe, Progress, Row, tcp_open
from .ports import port_holder
from ..shape import Shape
from .rabbitmq import PROBE_AMQP_TIMEOUT

START_DEADLINE = {"epmd": 5.0, "etcd": 30.0, "rabbitmq": 90.0}   # seconds to become healthy
FORM_DEADLINE = 60.0    # seconds for the three nodes to see each other running
STOP_TIMEOUT = 15.0     # seconds for a member to stop on SIGTERM before SIGKILL


def record_file(shape: Shape, member: m.Member) -> Path:
    return shape.folder / f"{member.name}.pid"


def log_file(shape: Shape, member: m.Member) -> Path:
    return shape.folder / "logs" / f"{member.name}.log"


def process(shape: Shape, member: m.Member) -> Launched | None:
    """The live process of ``member`` the kit started, or None (a stale record is removed)."""
    return launcher.found(member.name, record_file(shape, member), log_file(shape, member))


def probe(shape: Shape, member: m.Member) -> Probe:
    """The member's health: etcd's /health, an AMQP connection, epmd's port."""
    if member.kind == "etcd":
        return m.etcd_probe(member.port)
    if member.kind == "rabbitmq":
        if not tcp_open(member.port):
            return Probe("down")
        try:
            amqp.connect(shape.amqp_urls[member.index - 1], PROBE_AMQP_TIMEOUT, name="nirvana-probe").close()
        except (SvcError, *amqp.BROKER_ERRORS) as error:
            return Probe("unhealthy", f"no AMQP connection ({type(error).__name__})")
        return Probe("up")
    return Probe("up") if tcp_open(member.port) else Probe("down")


def _launch(shape: Shape, member: m.Member) -> Launch:
    if member.kind == "etcd":
        return m.etcd_launch(shape, member.index)
    if member.kind == "rabbitmq":
        return m.rabbit_launch(shape, member.index)
    return m.epmd_launch(shape)


def start(shape: Shape, member: m.Member) -> Launched:
    """Start ``member`` (not waiting for it); its start record and appended log in the shape's
    folder (:func:`.running.launch`, as a component of the single-node stack). Raises StackError
    naming the holder when its port is taken by another program."""
    holder = port_holder(member.port)
    if holder:
        raise StackError(f"port {member.port} that {member.name} needs is held by {holder}: stop that "
                         "program or free the port, then run `./kit up --cluster` again")
    return running.launch(member.name, _launch(shape, member), log=log_file(shape, member),
                          record=record_file(shape, member), cwd=shape.folder)


def wait_healthy(shape: Shape, waiting: list[tuple[m.Member, Launched]], progress: Progress) -> None:
    """Probe each started member until healthy, within its START_DEADLINE (seconds) from now.
    Raises StackError (one line, the log's last words) when one dies or its deadline passes."""
    began = time.monotonic()
    for member, proc in waiting:
        running.wait_healthy(member.name, member.address, proc, lambda member=member: probe(shape, member),
                             START_DEADLINE[member.kind], began, progress)


def start_members(shape: Shape, chosen: list[m.Member], progress: Progress) -> None:
    """Start each of ``chosen`` that is not running yet and wait until all are healthy."""
    waiting = []
    for member in chosen:
        if process(shape, member) is None and not probe(shape, member).up:
            waiting.append((member, start(shape, member)))
            progress(f"{member.name:<13} starting (log {display(log_file(shape, member))})")
    wait_healthy(shape, waiting, progress)


def up(shape: Shape, progress: Progress = print) -> list[Row]:
    """Start the cluster's members that are not running and wait until the three etcd members
    agree on a leader and the three RabbitMQ nodes run as one cluster. Idempotent.

    On a first start (no RabbitMQ data yet) node 1 starts alone and forms the cluster, the other
    two join it; later starts bring all three back at once. Raises StackError (one line).
    """
    (shape.folder / "logs").mkdir(parents=True, exist_ok=True)
    everyone = m.members(shape)
    epmd, etcds, nodes = everyone[:1], [x for x in everyone if x.kind == "etcd"], [x for x in everyone
                                                                                     if x.kind == "rabbitmq"]
    start_members(shape, epmd, progress)
    if m.fresh(shape):
        start_members(shape, etcds + nodes[:1], progress)
        start_members(shape, nodes[1:], progress)
    else:
        start_members(shape, etcds + nodes, progress)
    wait_formed(shape, progress)
    return status(shape)


def wait_formed(shape: Shape, progress: Progress, timeout: float = FORM_DEADLINE) -> None:
    """Wait until an etcd leader is known and node 1 sees every node running (seconds)."""
    want = sorted(m.node_name(shape, i) for i in range(1, len(shape.amqp) + 1))

    def look() -> tuple[list[str], list[str]]:
        return [m.etcd_role(client) for client, _peer in shape.etcd], m.running_nodes(shape, 1)

    try:
        roles, seen = poll(look, lambda found: found[0].count("leader") == 1 and found[1] == want,
                           what="the cluster to form", timeout=timeout, progress=quiet, interval=0.5)
    except WaitTimeout:
        roles, seen = look()
        raise StackError(f"the cluster did not form in {timeout:.0f} s: etcd roles {roles}, RabbitMQ "
                         f"nodes running {seen or 'unknown'}; see {display(shape.folder / 'logs')}") from None
    progress(f"cluster       formed: etcd leader {'etcd-%d' % (roles.index('leader') + 1)}, "
             f"{len(seen)} RabbitMQ nodes running")


def status(shape: Shape, queues: list[str] | None = None) -> list[Row]:
    """One :class:`Row` per member, its role in ``role``: etcd ``leader``/``follower``; a RabbitMQ
    node ``running`` or ``not running``, plus ``leads <queue>...`` for the quorum ``queues``
    (asked of the first running node, one rabbitmqctl call) when given."""
    rows = []
    leaders: dict[str, str] | None = None
    for member in m.members(shape):
        health = probe(shape, member)
        ours = process(shape, member)
        role = ""
        if member.kind == "etcd":
            role = m.etcd_role(member.port) if health.up else "not running"
        elif member.kind == "rabbitmq":
            role = "running" if health.up else "not running"
            if health.up and queues:
                if leaders is None:
                    leaders = m.queue_leaders(shape, member.index, queues)
                led = sorted(q for q, node in leaders.items() if node == m.node_name(shape, member.index))
                role += f", leads {' '.join(led)}" if led else ""
        log = log_file(shape, member)
        rows.append(Row(member.name, member.address, health.state,
                        "started by kit" if ours else "found running" if health.state != "down" else "",
                        display(log) if log.exists() else "", health.detail, role))
    return rows


def stop(shape: Shape, chosen: list[m.Member], *, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop ``chosen`` members the kit started, all at once (SIGTERM; SIGKILL after ``timeout``
    seconds; 0 is a crash: SIGKILL at once); the names stopped."""
    found = [proc for member in chosen if (proc := process(shape, member)) is not None]
    launcher.stop(found, timeout, kill_wait=STOP_TIMEOUT)
    return [proc.name for proc in found]


def down(shape: Shape, progress: Progress = print) -> list[str]:
    """Stop every member the kit started: the services' brokers and etcd first, epmd last."""
    everyone = m.members(shape)
    stopped = stop(shape, everyone[1:])
    stopped += stop(shape, everyone[:1])
    for name in stopped:
        progress(f"{name:<13} stopped")
    return stopped


def member(shape: Shape, name: str) -> m.Member:
    """The member called ``name`` (``etcd-1``, ``rabbitmq-2``, ``epmd``); StackError if none."""
    for candidate in m.members(shape):
        if candidate.name == name:
            return candidate
    raise StackError(f"no cluster member {name}: choose from {', '.join(x.name for x in m.members(shape))}")


def etcd_leader(shape: Shape) -> m.Member | None:
    """The etcd member that leads now, or None while none does."""
    for candidate in m.members(shape):
        if candidate.kind == "etcd" and m.etcd_role(candidate.port) == "leader":
            return candidate
    return None


def queue_leader(shape: Shape, queue: str) -> m.Member | None:
    """The RabbitMQ node that leads quorum ``queue`` (or stream: the log) now (asked of a running node), or None."""
    for candidate in m.members(shape):
        if candidate.kind == "rabbitmq" and probe(shape, candidate).up:
            leader = m.queue_leaders(shape, candidate.index, [queue]).get(queue)
            return next((x for x in m.members(shape) if x.kind == "rabbitmq"
                         and m.node_name(shape, x.index) == leader), None)
    return None
