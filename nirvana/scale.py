"""Chapter 09, scale out: the services on a cluster of their own, a leader killed under load, and
throughput with more replicas.

:class:`Cluster` is a cluster of three etcd members and three RabbitMQ nodes (the members of
``./kit up --cluster``, :mod:`nirvana.stack.cluster`) on free loopback ports with its data in a
temporary folder: the single-node stack the other chapters use (etcd on 2379, RabbitMQ on 5672)
keeps running beside it, untouched. It is stopped and removed by :meth:`Cluster.close` (the
chapter's last cells, and at interpreter exit); should the kernel die without an exit (SIGKILLed,
restarted while hung), its watchdog (:class:`nirvana.watchdog.Watchdog`) stops every member and
removes the folder.

:func:`stream_with_faults` runs ``orders`` and ``notify`` (replicas, deduplication by claims,
quorum queues) while the etcd leader is SIGKILLed and the RabbitMQ node that leads ``orders``'
queue is stopped, then accounts for every id with :func:`nirvana.checker.check`.
:func:`throughput` drains the same number of events with 1, 2 and 4 replicas of each service.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from svc import Etcd, amqp, topology
from svc.config import parse_endpoints
from svc.effects import counts_by_id
from svc.errors import DedupUnavailable
from .watchdog import Watchdog

from . import checker, rabbit, services
from .plots import subplots
from ._wait import Progress, poll, quiet
from .errors import TRANSIENT_READ_ERRORS
from .publisher import publish_bodies
from .shape import Shape, private_shape
from .stack import cluster, members, render_status

SERVICES = topology.DEFAULT_SERVICES
DRAIN_TIMEOUT = 90.0     # seconds for every event to be processed
START_TIMEOUT = 60.0     # seconds for a service's replicas to consume
CLOSE_TIMEOUT = 10.0     # seconds for the connection that deletes the run's queues (each wait of it)


class Cluster:
    """A cluster of the caller's own: ``up()``, ``table()``, ``etcd_leader()``,
    ``queue_leader(service)``, ``kill(name)``, ``stop(name)``, ``start(name)``, ``close()``.

    Member names are ``etcd-1``..``etcd-3``, ``rabbitmq-1``..``rabbitmq-3`` (and ``epmd``).
    Raises StackError (one line) when a member cannot start, RuntimeError when its watchdog
    (which stops the members should this process die without an exit) cannot start.
    """

    def __init__(self, *, progress: Progress = print) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="nirvana-cluster-"))
        self.shape: Shape = private_shape(self.folder)
        self.progress = progress
        # every member's start record is in the folder: the watchdog finds them when the kernel dies
        self._watchdog = Watchdog(stop_timeout=cluster.STOP_TIMEOUT)
        self._watchdog.records(self.folder)
        self._watchdog.remove(self.folder)
        atexit.register(self.close)

    def up(self) -> "Cluster":
        """Start every member and wait until the cluster has formed (about 20-40 s)."""
        started = time.monotonic()
        cluster.up(self.shape, self.progress)
        self.progress(f"cluster up in {time.monotonic() - started:.0f} s")
        return self

    def environment(self) -> dict[str, str]:
        """svc's AMQP_URL (every node), ETCD_ENDPOINTS (every member) and QUEUE_TYPE=quorum."""
        return self.shape.environment()

    def table(self, services_shown: tuple[str, ...] = (), exchange: str = topology.DEFAULT_EXCHANGE) -> str:
        """The members with their roles; which node leads the queues of ``services_shown``."""
        queues = [topology.queue_name(name, exchange=exchange) for name in services_shown]
        return render_status(cluster.status(self.shape, queues or None))

    def summary(self) -> str:
        """Two lines that do not change from run to run while the cluster is healthy."""
        rows = cluster.status(self.shape)
        etcds = [row for row in rows if row.name.startswith("etcd-")]
        nodes = [row for row in rows if row.name.startswith("rabbitmq-")]
        names = sorted(members.node_name(self.shape, i) for i in range(1, len(nodes) + 1))
        return (f"etcd: {sum(row.healthy for row in etcds)} members healthy, "
                f"{sum(row.role == 'leader' for row in etcds)} leader\n"
                f"RabbitMQ: {sum(row.healthy for row in nodes)} nodes running, one cluster: "
                f"{members.running_nodes(self.shape, 1) == names}")

    def etcd_leader(self) -> str | None:
        """The name of the etcd member that leads now (None while none does)."""
        leader = cluster.etcd_leader(self.shape)
        return leader.name if leader else None

    def queue_leader(self, service: str, exchange: str = topology.DEFAULT_EXCHANGE) -> str | None:
        """The name of the RabbitMQ node that leads ``service``'s quorum queue now."""
        leader = cluster.queue_leader(self.shape, topology.queue_name(service, exchange=exchange))
        return leader.name if leader else None

    def kill(self, name: str) -> None:
        """SIGKILL member ``name`` (a crash: no goodbye to its peers)."""
        cluster.stop(self.shape, [cluster.member(self.shape, name)], timeout=0)

    def stop(self, name: str) -> None:
        """Stop member ``name`` gracefully (SIGTERM), as an operator does."""
        cluster.stop(self.shape, [cluster.member(self.shape, name)])

    def start(self, name: str) -> None:
        """Start member ``name`` again on its data and wait until it is healthy."""
        cluster.start_members(self.shape, [cluster.member(self.shape, name)], quiet)

    def live_url(self) -> str:
        """The AMQP URL of the first node that answers (where the chapter publishes)."""
        for node in members.members(self.shape):
            if node.kind == "rabbitmq" and cluster.probe(self.shape, node).up:
                return self.shape.amqp_urls[node.index - 1]
        raise RuntimeError("no RabbitMQ node of the cluster answers")

    def close(self) -> None:
        """Stop every member, delete the cluster's folder, dismiss the watchdog (idempotent)."""
        if self.folder.exists():
            cluster.down(self.shape, self.progress)
            shutil.rmtree(self.folder, ignore_errors=True)
        self._watchdog.close()


@dataclass(frozen=True)
class Report:
    """What :func:`stream_with_faults` did and found: one checker row per service."""

    rows: tuple[checker.Row, ...]
    faults: tuple[str, ...]
    down: tuple[str, ...]  # the members the faults hit: the etcd leader, the queue's leader node
    moved: dict            # {"etcd": new leader name, "queue": new leader node} after the faults
    seconds: float

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def table(self) -> str:
        return checker.render(self.rows)


class _Run:
    """One run's exchange, etcd prefix and environment on the cluster; removed by ``close``."""

    def __init__(self, cl: Cluster, **extra: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.cluster, self.tag = cl, tag
        self.exchange, self.prefix = f"scale-{tag}", f"/scale-{tag}"
        self.env = {**cl.environment(), "EVENTS_EXCHANGE": self.exchange, "ETCD_PREFIX": self.prefix,
                    "CLAIM_TTL": "2", "ETCD_TIMEOUT": "1", "PREFETCH": "50", **extra}
        self.etcd = Etcd(parse_endpoints(cl.shape.etcd_endpoints), timeout=2)

    def bodies(self, count: int, start: int = 0) -> tuple[list[str], list[bytes]]:
        ids = [f"{self.tag}-{i}" for i in range(start, start + count)]
        return ids, [json.dumps({"type": "new_order", "id": event_id}).encode() for event_id in ids]

    def counts(self, service: str) -> dict[str, int]:
        """{id: times processed} from the effects in etcd; the client fails over past a dead member."""
        for _attempt in range(len(self.cluster.shape.etcd)):
            try:
                return counts_by_id(self.etcd, service, prefix=self.prefix)
            except DedupUnavailable:
                continue
        return counts_by_id(self.etcd, service, prefix=self.prefix)

    def drained(self, ids: list[str], progress: Progress) -> None:
        """Wait until each service processed every id and its queue is empty (DRAIN_TIMEOUT s)."""
        want = len(ids)
        poll(lambda: [len(self.counts(name).keys() & set(ids)) for name in SERVICES]
             + [sum(rabbit.queue_depth(name, exchange=self.exchange, url=self.cluster.live_url()) for name in SERVICES)],
             lambda seen: seen[:-1] == [want] * len(SERVICES) and seen[-1] == 0,
             what=f"{want} ids processed by {' and '.join(SERVICES)}", timeout=DRAIN_TIMEOUT, progress=progress,
             describe=lambda seen: f"processed {', '.join(map(str, seen[:-1]))} of {want}, {seen[-1]} waiting",
             interval=0.1, transient=TRANSIENT_READ_ERRORS)

    def start(self, replicas: int) -> None:
        for name in SERVICES:
            services.start(name, dedup=True, replicas=replicas, env=self.env, progress=quiet, timeout=START_TIMEOUT)

    def close(self) -> None:
        services.stop_all(timeout=5)
        try:
            connection = amqp.connect(self.cluster.live_url(), CLOSE_TIMEOUT, name="nirvana scale")
            try:
                with amqp.translated(f"deleting the queues of {self.exchange}"):
                    topology.delete(connection.channel(), self.exchange, services=SERVICES)
            finally:
                amqp.close_quietly(connection)
        finally:
            self.etcd.close()


def stream_with_faults(cl: Cluster, *, events: int = 1000, replicas: int = 2, progress: Progress = print) -> Report:
    """Publish ``events`` ids in six slices to ``orders`` and ``notify`` (``replicas`` each, claims
    in etcd, quorum queues); after the second slice SIGKILL the etcd leader, after the fourth
    stop the node that leads ``orders``' queue; account for every id. Both members are started
    again before it returns. Raises TimeoutError when the queues do not drain in DRAIN_TIMEOUT s.
    """
    started = time.monotonic()
    run = _Run(cl)
    faults: list[str] = []
    down: list[str] = []
    try:
        run.start(replicas)
        ids, bodies = run.bodies(events)
        slices = [bodies[n * len(bodies) // 6:(n + 1) * len(bodies) // 6] for n in range(6)]
        for n, part in enumerate(slices):
            publish_bodies(part, exchange=run.exchange, url=cl.shape.amqp_url)
            if n == 1:
                leader = cl.etcd_leader()
                cl.kill(leader)
                down.append(leader)
                faults.append(f"etcd leader {leader} SIGKILLed")
            if n == 3:
                node = cl.queue_leader("orders", run.exchange)
                cl.kill(node)
                down.append(node)
                faults.append(f"{node}, leader of {topology.queue_name('orders', exchange=run.exchange)}, SIGKILLed")
            progress(f"slice {n + 1} of 6 published{': ' + faults[-1] if n in (1, 3) else ''}")
        run.drained(ids, progress)
        moved = {"etcd": cl.etcd_leader(), "queue": cl.queue_leader("orders", run.exchange)}
        for name in SERVICES:
            services.stop(name, progress=quiet)
        rows = tuple(checker.check(name, ids, run.counts(name), (),
                                   rabbit.queue_depth(name, exchange=run.exchange, url=cl.live_url()))
                     for name in SERVICES)
        return Report(rows, tuple(faults), tuple(down), moved, time.monotonic() - started)
    finally:
        run.close()
        for name in down:
            cl.start(name)
            progress(f"{name} started again")


@dataclass(frozen=True)
class Throughput:
    """Events per second each service processed, by replicas per service; ``exact``: every id
    processed exactly once by each service in every round."""

    rates: dict[int, float]
    events: int
    exact: bool

    def table(self) -> str:
        base = self.rates[min(self.rates)]
        lines = ["replicas  events/s per service  vs 1 replica"]
        lines += [f"{n:>8}  {rate:>20,.0f}  {rate / base:>11.2f}x" for n, rate in self.rates.items()]
        return "\n".join(lines)


def throughput(cl: Cluster, *, replicas: tuple[int, ...] = (1, 2, 4), events: int = 2000,
               progress: Progress = print) -> Throughput:
    """For each count of replicas: start that many of each service (claims in etcd, quorum
    queues), publish ``events`` ids at once, time until both services processed them all.
    Raises TimeoutError when a round does not drain in DRAIN_TIMEOUT s."""
    rates: dict[int, float] = {}
    exact = True
    for count in replicas:
        run = _Run(cl)
        try:
            run.start(count)
            ids, bodies = run.bodies(events)
            began = time.monotonic()
            publish_bodies(bodies, exchange=run.exchange, url=cl.shape.amqp_url)
            run.drained(ids, quiet)
            rates[count] = events / (time.monotonic() - began)
            exact &= all(checker.check(name, ids, run.counts(name)).ok for name in SERVICES)
            progress(f"{count} replica(s) of each service: {rates[count]:,.0f} events/s per service")
        finally:
            run.close()
    return Throughput(rates, events, exact)


def plot_throughput(result: Throughput) -> Figure:
    """Bars: events/s per service by replicas per service, the ratio to 1 replica on each bar."""
    fig, ax = subplots()
    counts = list(result.rates)
    bars = ax.bar([str(n) for n in counts], [result.rates[n] for n in counts], color="tab:blue")
    base = result.rates[counts[0]]
    ax.bar_label(bars, [f"{result.rates[n]:,.0f}/s ({result.rates[n] / base:.2f}x)" for n in counts])
    ax.set_xlabel("replicas of each service")
    ax.set_ylabel("events/s per service")
    ax.set_title(f"{result.events} events on the cluster, claims in etcd, quorum queues")
    ax.margins(y=0.2)
    fig.tight_layout()
    return fig


__all__ = ["Cluster", "Report", "Throughput", "stream_with_faults", "throughput", "plot_throughput"]
