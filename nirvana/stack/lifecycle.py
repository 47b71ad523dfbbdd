"""The stack's lifecycle: ``up`` starts what is not answering, ``status`` tells, ``down`` stops
what the kit started (the services that consume from the stack first)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from svc import topology

from .. import paths, services, shape
from .._wait import poll, quiet
from ..launcher import Launched
from ..errors import StackError, WaitTimeout
from ..settings import current
from . import carbon, cluster, etcd, graphite, rabbitmq, statsd
from .component import DOCKER_HINT, SETUP_HINT, Component, Probe, Progress, Row
from .jupyterlab import LAB
from .ports import check_free, port_holder
from .running import display, kit_process, log_file, start, stop, wait_component

# in start order: the broker and etcd first, graphite-web after the carbon it reads
COMPONENTS: tuple[Component, ...] = (rabbitmq.COMPONENT, etcd.COMPONENT, carbon.COMPONENT,
                                     statsd.COMPONENT, graphite.COMPONENT)
BY_NAME = {component.name: component for component in COMPONENTS + (LAB,)}


def select(names: Iterable[str]) -> list[Component]:
    """The components named (all of the stack when none); StackError names an unknown one."""
    names = list(names)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise StackError(f"unknown component {', '.join(unknown)}: choose from {', '.join(BY_NAME)}")
    return [BY_NAME[name] for name in names] if names else list(COMPONENTS)


def up(progress: Progress = print, only: Iterable[str] = (), *, cluster: bool = False) -> list[Row]:
    """Start every component that is not answering; wait for each with its deadline (seconds).

    Idempotent: a healthy component (started by the kit or found running) is left alone.
    ``cluster``: etcd and RabbitMQ as three members each (:mod:`.cluster`), the shape recorded
    until ``down``; while it is recorded, ``up`` keeps that shape.
    Raises :class:`StackError` with a one-line message when something cannot start.
    """
    only = list(only)
    kit_cluster = _cluster_shape(cluster)
    if kit_cluster is not None:
        return _up_cluster(kit_cluster, progress, only)
    return _up_single(progress, only)


def _up_single(progress: Progress, only: list[str]) -> list[Row]:
    """``up`` of the named components (all when none) as single processes."""
    components = select(only)
    state = paths.state_dir()
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    waiting: list[tuple[Component, Launched, float]] = []
    found: list[tuple[Component, float]] = []
    for component in components:
        probe = component.probe()
        ours = kit_process(component.name)
        if probe.up:
            progress(f"{component.name:<13} up, {'started by the kit' if ours else 'found running'} "
                     f"at {component.address}")
            continue
        if ours is not None:  # ours and still starting (another `up` started it a moment ago)
            waiting.append((component, ours, time.monotonic()))
            continue
        if probe.state == "unhealthy":  # found, not healthy yet (docker's port proxy answers first)
            found.append((component, time.monotonic()))
            continue
        _check_startable(component, probe)
        process = start(component, component.launch(state))
        progress(f"{component.name:<13} starting (log {display(log_file(component.name))})")
        waiting.append((component, process, time.monotonic()))
    for component, process, started in waiting:
        wait_component(component, process, started, progress)
    for component, started in found:
        _wait_found(component, started, progress)
    return status(components=[c.name for c in components])


def _check_startable(component: Component, probe: Probe) -> None:
    check_free(component)
    if probe.state == "unhealthy":  # answers, but not as this component: held by something unseen
        raise StackError(f"{component.name} at {component.address} answers but is not healthy "
                         f"({probe.detail}): stop the program on that port, then run `./kit up` again")
    for needed, provider in component.needs:
        found = Path(needed).exists() if os.sep in needed else shutil.which(needed)
        if not found:
            raise StackError(f"{component.name} cannot start: {needed} is missing ({provider}): "
                             f"{SETUP_HINT}, {DOCKER_HINT}")


def _wait_found(component: Component, started: float, progress: Progress) -> None:
    """A component found answering but not healthy (a container still starting behind docker's
    port proxy, which accepts connections before the service inside listens) is given its own
    start deadline (seconds from ``started``, monotonic); then a port still held is the one-line
    "held by" error, and one no longer answering says to run ``up`` again."""
    progress(f"{component.name:<13} found, not healthy yet: waiting up to {component.deadline:.0f} s")
    try:
        poll(component.probe, lambda seen: seen.up, what=f"{component.name} to be healthy",
             timeout=started + component.deadline - time.monotonic(), progress=quiet, interval=0.2)
    except WaitTimeout:
        _check_startable(component, component.probe())   # still held: one line naming the holder
        raise StackError(f"{component.name} at {component.address} stopped answering while the kit "
                         f"waited {component.deadline:.0f} s for it to become healthy: run `./kit up` again") from None
    progress(f"{component.name:<13} up, found running at {component.address} "
             f"(healthy after {time.monotonic() - started:.1f} s)")


def status(components: Iterable[str] = (), *, leaders: bool = False) -> list[Row]:
    """One :class:`Row` per component (all of the stack when none is named); in the cluster shape
    one per etcd member and RabbitMQ node instead of ``etcd`` and ``rabbitmq``, with their roles
    (``leaders``: which node leads each service queue too, one rabbitmqctl call)."""
    components = list(components)
    kit_cluster = shape.recorded()
    rows = []
    if kit_cluster is not None:
        if not components or {"etcd", "rabbitmq"} & set(components):
            rows += cluster.status(kit_cluster, _service_queues() if leaders else None)
        components = [name for name in components or (c.name for c in COMPONENTS) if name not in ("etcd", "rabbitmq")]
        if not components:
            return rows
    for component in select(components):
        probe = component.probe()
        ours = kit_process(component.name)
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
        log = display(log_file(component.name)) if ours is not None or log_file(component.name).exists() else ""
        rows.append(Row(component.name, component.address, probe.state, origin, log, detail))
    return rows


def render_status(rows: Iterable[Row]) -> str:
    """A plain text table with stable columns (used by the CLI and the notebooks)."""
    rows = list(rows)
    roles = any(r.role for r in rows)   # a cluster's members: their role as a column of its own
    header = ("component", "address", "state", *(("role",) if roles else ()), "origin", "log")
    lines = [header] + [(r.name, r.address, r.state + (f" ({r.detail})" if r.detail and not r.healthy else ""),
                         *((r.role or "-",) if roles else ()), r.origin or "-", r.log or "-") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def down(progress: Progress = print, only: Iterable[str] = ()) -> list[str]:
    """Stop what the kit started (by process group) and only that. Returns the names stopped."""
    stopped = []
    if not only:
        # the services consume from the stack: stop them first, so none is left orphaned to
        # compete for the queues with the next run
        for name in services.stop_all():
            progress(f"{name:<13} stopped (svc)")
    kit_cluster = shape.recorded()
    components = select(only) if only else [*COMPONENTS, LAB]
    for component in reversed(components):  # JupyterLab first, then the stack in reverse start order
        process = kit_process(component.name)
        if process is None and kit_cluster is not None and component.name in ("etcd", "rabbitmq"):
            continue   # the cluster's members answer there: stopped below
        if process is None:
            if component.probe().state != "down":
                progress(f"{component.name:<13} left running (not started by the kit)")
            continue
        stop(component.name, process)
        stopped.append(component.name)
        progress(f"{component.name:<13} stopped")
    if not only or {"etcd", "rabbitmq"} & set(only):
        # the kit's cluster, recorded or not (a record lost with a crash leaves no member behind)
        stopped += cluster.down(kit_cluster or shape.kit_shape(), progress)
        shape.forget()
    return stopped


def _cluster_shape(asked: bool):
    """The kit's cluster shape when ``--cluster`` is asked or recorded (None: the single node).
    Raises StackError when the single node's etcd or RabbitMQ started by the kit still runs."""
    recorded = shape.recorded()
    if recorded is None and not asked:
        return None
    running = [name for name in ("etcd", "rabbitmq") if kit_process(name) is not None]
    if running:
        raise StackError(f"the single-node stack's {' and '.join(running)} run (started by the kit): "
                         "stop them with `./kit down`, then run `./kit up --cluster`")
    return recorded or shape.kit_shape()


def _up_cluster(kit_cluster, progress: Progress, only: list[str]) -> list[Row]:
    """``up`` in the cluster shape: the cluster (recorded first, so ``down`` finds it even if a
    member fails to start), then the components that have no cluster (statsd, carbon, graphite)."""
    select(only)   # an unknown name: one line
    shape.record(kit_cluster)
    rest = [name for name in only or [c.name for c in COMPONENTS] if name not in ("etcd", "rabbitmq")]
    if not only or {"etcd", "rabbitmq"} & set(only):
        cluster.up(kit_cluster, progress)
    if rest:
        _up_single(progress, rest)
    return status(only)


def _service_queues() -> list[str]:
    """The queues of the talk's services and of those the kit started (``status`` names their leaders)."""
    return [topology.queue_name(name, exchange=current().exchange)
            for name in (*topology.DEFAULT_SERVICES, *services.known_names())]
