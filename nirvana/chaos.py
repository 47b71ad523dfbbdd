"""The chaos proof: publish while killing, cutting and restarting, then account for every id.

A Jepsen-style total-queue run (chapter 7, and ``bench/chaos.py`` at full size):

1. a throwaway etcd (:class:`nirvana.own_etcd.OwnEtcd`) and an exchange of the run's own, so
   nothing shared is stopped or touched;
2. ``orders`` and ``notify``, ``replicas`` each, consuming while ``events`` ids are published
   (a ``duplicate_share`` of them twice, the second copy a little later);
3. between slices of the publishing, the faults, one after another: SIGKILLs of single replicas, the two crash points
   (``CRASH_AT=claimed``, ``CRASH_AT=done``), a broker connection closed by ``rabbitmqctl``,
   an etcd restart; as options (``Plan.broker_restart``, ``Plan.lost_handshakes``): the kit's own
   RabbitMQ stopped and started, and every connection of the services, which reach the broker
   through a proxy (:class:`nirvana.proxy.HandshakeProxy`), cut, then their handshakes lost at
   each step for a few seconds (what a load balancer with no healthy node behind it does); after
   each fault every replica must still run (a replica that exited by itself is in ``Report.exits``);
4. every replica back, the queues drained, the services stopped gracefully;
5. per service, :func:`nirvana.checker.check` over the ids published, the effects counted in
   etcd, the dead letters and what is left in the queue.
"""

import functools
import json
import random
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit


from svc import amqp, topology
from svc.effects import counts_by_id

from . import checker, deadletters, rabbit, services, settings, stack
from .plots import plot_reports   # chapter 7 draws its reports with chaos.plot_reports
from ._wait import Progress, poll, quiet
from .errors import TRANSIENT_READ_ERRORS, KitError
from .cuts import CUT_TIMEOUT, RABBITMQCTL_TIMEOUT, cut_connection, cut_replica, restart_broker
from .own_etcd import OwnEtcd
from .proxy import LOST_HANDSHAKES, HandshakeProxy
from .publisher import publish_bodies

CRASH_TIMEOUT = 15.0    # seconds for a replica started with CRASH_AT to reach its crash point
GAP = 0.2               # seconds between two faults
HANDSHAKES_LOST_FOR = 3.0   # seconds the proxy loses every handshake (svc's backoff reaches 1.6 s meanwhile)


@dataclass(frozen=True)
class Plan:
    """What a run does. ``kills`` counts every SIGKILL, the two crash points' included."""

    events: int = 3000                 # distinct ids
    duplicate_share: float = 0.10      # of the ids published twice
    services: tuple[str, ...] = ("orders", "notify")
    replicas: int = 2
    kills: int = 10
    crash_points: bool = True          # CRASH_AT=claimed and CRASH_AT=done among the kills
    cut: bool = True                   # close one replica's broker connection
    etcd_restart: bool = True
    broker_restart: bool = False       # the kit's own RabbitMQ stopped and started (never one found running)
    lost_handshakes: bool = False      # the services behind a proxy: connections cut, then handshakes lost
    dedup: bool = True
    drain_timeout: float = 120.0       # seconds for the queues to drain after the last fault
    claim_ttl: int = 2                 # seconds: a killed replica's claims end this soon
    seed: int = 7


@dataclass(frozen=True)
class Report:
    """A run's result: one checker row per service, the faults as done, and timings (seconds)."""

    plan: Plan
    rows: tuple[checker.Row, ...]
    faults: tuple[str, ...]
    sigkills: int
    published_events: int
    crash_points: tuple[str, ...]      # the crash points actually reached
    run_seconds: float
    drain_seconds: float
    exits: tuple[str, ...] = ()        # replicas that exited by themselves (no fault may make one exit)
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every id accounted for by every service, and no replica exited by itself."""
        return all(row.ok for row in self.rows) and not self.exits

    def table(self) -> str:
        return checker.render(self.rows)


def workload(plan: Plan, tag: str) -> tuple[list[str], list[bytes]]:
    """The ids and the bodies in publishing order: each id once, a ``duplicate_share`` of them
    again up to 200 events later. Pure (seeded)."""
    rng = random.Random(plan.seed)
    ids = [f"{tag}-{i}" for i in range(plan.events)]
    twice = set(rng.sample(range(plan.events), round(plan.events * plan.duplicate_share)))
    slots: list[tuple[float, str]] = []
    for i, event_id in enumerate(ids):
        slots.append((i, event_id))
        if i in twice:
            slots.append((i + rng.uniform(1, 200), event_id))
    slots.sort()
    types = ("new_order", "ban_user")
    bodies = [json.dumps({"type": types[int(event_id.rsplit("-", 1)[1]) % 2], "id": event_id}).encode()
              for _, event_id in slots]
    return ids, bodies


class _Run:
    """The state of one run: settings, the faults' log, the SIGKILL count."""

    def __init__(self, plan: Plan, etcd: OwnEtcd, exchange: str, progress: Progress,
                 node: stack.RabbitNode) -> None:
        self.plan, self.etcd, self.exchange, self.say, self.node = plan, etcd, exchange, progress, node
        self.slices: list[list[bytes]] = []
        self.prefix = settings.current().etcd_prefix   # the services' ETCD_PREFIX: where their effects are
        self.env = {"EVENTS_EXCHANGE": exchange, "ETCD_ENDPOINTS": etcd.endpoint, "ETCD_TIMEOUT": "0.5",
                    "CLAIM_TTL": str(plan.claim_ttl), "PREFETCH": "50"}
        self.faults: list[str] = []
        self.sigkills = 0
        self.crash_points: list[str] = []
        self.exits: list[str] = []
        self.cutting: threading.Thread | None = None
        self.proxy: HandshakeProxy | None = None
        if plan.lost_handshakes:   # the services reach the broker through it (the kit's helpers do not)
            url = settings.current().amqp_url.split(",")[0]
            parts = urlsplit(url)
            self.proxy = HandshakeProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
            self.env["AMQP_URL"] = self.proxy.url(url)

    def start(self, service: str, *, wait: bool = True, **extra: str) -> None:
        services.start(service, dedup=self.plan.dedup, replicas=self.plan.replicas, env={**self.env, **extra},
                       wait=wait, progress=quiet)

    def feed(self) -> None:
        """Publish the next slice of the workload (nothing when it is all out)."""
        if self.slices:
            publish_bodies(self.slices.pop(0), exchange=self.exchange)

    def log(self, line: str) -> None:
        self.faults.append(line)
        self.say(f"  fault {len(self.faults)}: {line}")

    def kill(self, service: str, instance: int) -> None:
        services.kill(service, instance=instance, progress=quiet)
        self.sigkills += 1
        self.start(service, wait=False)   # its successor joins while the next fault strikes
        self.log(f"SIGKILL {service} replica {instance}, started again")

    def crash(self, service: str, point: str) -> None:
        services.kill(service, instance=self.plan.replicas, progress=quiet)
        self.sigkills += 1
        self.start(service, wait=False, CRASH_AT=point)   # it may crash before it counts as ready
        try:
            # Events reach the crash point only once it consumes: feed the queue then.
            poll(lambda: (rabbit.consumers(service, exchange=self.exchange), len(services.instances(service))),
                 lambda seen: seen[0] >= self.plan.replicas or seen[1] < self.plan.replicas,
                 what=f"{service} with CRASH_AT={point} to consume", timeout=CRASH_TIMEOUT, progress=quiet)
            self.feed()
            poll(lambda: len(services.instances(service)), lambda n: n < self.plan.replicas,
                 what=f"{service} to crash at {point}", timeout=CRASH_TIMEOUT, progress=quiet)
            self.crash_points.append(point)
            how = f"killed itself at the {point} point"
        except TimeoutError:
            services.kill(service, instance=self.plan.replicas, progress=quiet)
            how = f"did not reach the {point} point (no event came): SIGKILLed instead"
        self.sigkills += 1
        self.start(service, wait=False)
        self.log(f"SIGKILL {service} replica {self.plan.replicas}, its successor {how}, started again")

    def cut(self, service: str) -> None:
        """In a thread of its own (rabbitmqctl takes seconds): the next faults go on meanwhile.
        A replica whose connection is open is cut (see cut_replica: the one the crash point just
        restarted is awaited first)."""
        def close() -> None:
            try:
                closed, instance = cut_replica(service, exchange=self.exchange, replicas=self.plan.replicas,
                                               node=self.node)
                self.log(f"broker connection of {service} replica {instance} closed by rabbitmqctl ({closed} closed)")
            except KitError as error:   # no replica's connection open in time, RabbitMQ not answering
                self.log(f"broker connection of {service} NOT closed: {error}")
            except (subprocess.SubprocessError, OSError) as error:
                self.log(f"broker connection of {service} NOT closed: rabbitmqctl failed: {error}")
        self.cutting = threading.Thread(target=close, name="chaos-cut", daemon=True)
        self.cutting.start()

    def start_all(self) -> None:
        """Every replica of every service, all spawned at once, then awaited."""
        for name in self.plan.services:
            self.start(name, wait=False)
        want = self.plan.replicas
        for name in self.plan.services:
            poll(lambda name=name: rabbit.consumers(name, exchange=self.exchange), lambda n: n >= want,
                 what=f"{want} replicas of {name} consuming", timeout=services.DEFAULT_TIMEOUT * 2, progress=quiet)

    def restart_etcd(self) -> None:
        self.etcd.restart()
        self.log("etcd restarted (SIGTERM, then started on its data)")

    def restart_broker(self) -> None:
        """The kit's own RabbitMQ node stopped and started (see cuts.restart_broker); never a broker
        the kit did not start: then the fault is logged as not done."""
        if self.cutting is not None:   # a cut still asking rabbitmqctl would fail against the stopped node
            self.cutting.join(CUT_TIMEOUT + 3 * RABBITMQCTL_TIMEOUT)
        try:
            took = restart_broker(self.node)
            self.log(f"RabbitMQ restarted (rabbitmqctl stop_app, start_app): answering again after {took:.1f} s")
        except KitError as error:
            self.log(f"RabbitMQ NOT restarted: {error}")

    def lose_handshakes(self) -> None:
        """Every connection through the proxy cut, then for HANDSHAKES_LOST_FOR seconds each new
        one lost during its handshake, in turn: EOF before the broker answers, after
        Connection.Start, after Connection.Tune, a reset. First every replica is awaited consuming
        (after a broker restart they are still in their backoff), so the cut finds their connections."""
        want = self.plan.replicas
        for name in self.plan.services:
            try:
                poll(lambda name=name: rabbit.consumers(name, exchange=self.exchange), lambda n: n >= want,
                     what=f"{want} replicas of {name} consuming", timeout=CRASH_TIMEOUT, progress=quiet)
            except TimeoutError:
                pass   # cut what is connected
        before = sum(self.proxy.accepted[mode] for mode in LOST_HANDSHAKES)
        self.proxy.cycle = LOST_HANDSHAKES
        closed = self.proxy.cut()
        time.sleep(HANDSHAKES_LOST_FOR)
        self.proxy.cycle = ()
        lost = sum(self.proxy.accepted[mode] for mode in LOST_HANDSHAKES) - before
        self.log(f"proxy: {closed} broker connections cut, then {lost} handshakes lost in {HANDSHAKES_LOST_FOR:g} s "
                 "(EOF before the answer, after Start, after Tune, reset)")

    def check_exits(self) -> None:
        """Every replica must still run after a fault: one missing exited by itself (the faults'
        SIGKILLs start a successor at once). Each is noted with its last log lines, and started again."""
        for name in self.plan.services:
            running = {s.instance for s in services.instances(name)}
            for instance in sorted(set(range(1, self.plan.replicas + 1)) - running):
                last = services.logs(name, 3, instance=instance).replace("\n", " | ")
                self.exits.append(f"{name} replica {instance} exited after fault {len(self.faults)}: {last}")
                self.say(f"  EXIT: {self.exits[-1]}")
            if len(running) < self.plan.replicas:
                self.start(name, wait=False)

    def schedule(self) -> list:
        """The faults in order: crash points early (events must flow to reach them)."""
        plan, names = self.plan, self.plan.services
        kills = max(plan.kills - 4, 0) if plan.crash_points else plan.kills   # a crash point costs two
        steps = [lambda: self.crash(names[0], "claimed")] if plan.crash_points else []
        steps += [lambda i=i: self.kill(names[i % len(names)], 1 + (i // len(names)) % plan.replicas)
                  for i in range(kills // 2)]
        if plan.crash_points:
            steps.append(lambda: self.crash(names[-1], "done"))
        if plan.cut:
            steps.append(lambda: self.cut(names[-1]))
        if plan.etcd_restart:
            steps.append(self.restart_etcd)
        if plan.broker_restart:
            steps.append(self.restart_broker)
        if plan.lost_handshakes:
            steps.append(self.lose_handshakes)
        steps += [lambda i=i: self.kill(names[(i + 1) % len(names)], 1 + (i // len(names)) % plan.replicas)
                  for i in range(kills // 2, kills)]
        return steps

    def counts(self, service: str) -> dict[str, int]:
        """{id: times processed} from the effects ``service`` recorded in the run's etcd."""
        return counts_by_id(self.etcd.endpoint, service, prefix=self.prefix)

    def accounted(self, ids: list[str]) -> tuple[int, ...]:
        """Per service: ids processed at least once, then the messages waiting in its queue."""
        counts = [self.counts(name) for name in self.plan.services]
        dead = len(deadletters.peek(exchange=self.exchange))
        return (*(sum(1 for i in ids if c.get(i)) for c in counts), dead,
                sum(rabbit.queue_depth(name, exchange=self.exchange) for name in self.plan.services))

    def settle(self) -> None:
        """Stop gracefully; copies handed back (a sibling's claim) are drained by one replica."""
        for name in self.plan.services:
            services.stop(name, progress=quiet)
            if rabbit.queue_depth(name, exchange=self.exchange):
                services.start(name, dedup=self.plan.dedup, env=self.env, progress=quiet)
                rabbit.wait_for_depth(name, 0, exchange=self.exchange, timeout=self.plan.drain_timeout,
                                      progress=quiet)
                services.stop(name, progress=quiet)


def _dead_ids(exchange: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for letter in deadletters.peek(limit=10_000, exchange=exchange):
        try:
            event_id = str(json.loads(letter.body)["id"])
        except (ValueError, KeyError, TypeError):
            event_id = f"unreadable {letter.key}"
        found.setdefault(letter.service, set()).add(event_id)
    return found


def _topology(exchange: str, names: tuple[str, ...], action) -> None:
    """Declare or delete the run's exchange and queues on a connection of its own (a connection
    kept through a long run would miss its heartbeats and be closed by the broker)."""
    connection = amqp.connect(settings.current().amqp_url, name="nirvana chaos")
    try:
        action(connection.channel(), exchange, services=names)
    finally:
        if connection.is_open:
            connection.close()


def run(plan: Plan = Plan(), *, progress: Progress = print, node: stack.RabbitNode | None = None) -> Report:
    """Run the plan; the Report. Everything it started is stopped and removed, also on error.

    ``node``: the RabbitMQ node whose ``rabbitmqctl`` cuts the connection (see cut_connection)
    and, with ``plan.broker_restart``, is restarted (only the kit's own node);
    default ``stack.rabbitmq_node()`` found now. A caller running with a state folder of its own
    (NIRVANA_STATE) passes the node found before it moved the folder.

    Raises TimeoutError when the queues do not drain within ``plan.drain_timeout``, and svc's
    PublishError (or BrokerRefused) when the broker does not confirm a slice of events.
    """
    started = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    exchange = f"chaos-{tag}"
    etcd = OwnEtcd(progress=quiet).start()
    chaos = None
    try:
        kit = settings.current()   # the services it starts declare their queues as the kit's settings say
        _topology(exchange, plan.services, functools.partial(topology.declare, queue_type=kit.queue_type,
                                                             delivery_limit=kit.delivery_limit))
        chaos = _Run(plan, etcd, exchange, progress, node or stack.rabbitmq_node())
        chaos.start_all()
        ids, bodies = workload(plan, tag)
        dedup = "dedup on (claims)" if plan.dedup else "dedup OFF"
        progress(f"{len(plan.services)} services x {plan.replicas} replicas, {dedup}, throwaway etcd; "
                 f"publishing {len(bodies)} events ({len(ids)} ids, {len(bodies) - len(ids)} twice) "
                 "a slice before each fault")
        steps = chaos.schedule()
        chaos.slices = [bodies[n * len(bodies) // (len(steps) + 3):(n + 1) * len(bodies) // (len(steps) + 3)]
                        for n in range(len(steps) + 3)]
        for step in steps:
            chaos.feed()   # events in flight while the fault strikes
            step()
            time.sleep(GAP)
            chaos.check_exits()
        while chaos.slices:
            chaos.feed()
        if chaos.cutting is not None:
            chaos.cutting.join(CUT_TIMEOUT + 3 * RABBITMQCTL_TIMEOUT)
        drain_started = time.monotonic()
        chaos.start_all()   # every replica back, none with a crash point
        want = len(ids)
        try:
            poll(lambda: chaos.accounted(ids),
                 lambda seen: all(n == want for n in seen[:len(plan.services)]) and seen[-1] == 0,
                 what=f"every id processed by {' and '.join(plan.services)}, queues empty",
                 timeout=plan.drain_timeout, progress=progress,
                 describe=lambda seen: f"processed {', '.join(map(str, seen[:-2]))} of {want}, {seen[-1]} waiting",
                 transient=TRANSIENT_READ_ERRORS)
        except TimeoutError as error:   # what each replica last said is the way to the cause
            tails = [f"--- {s.key}:\n{services.logs(name, 8, instance=s.instance)}"
                     for name in plan.services for s in services.instances(name)]
            raise TimeoutError("\n".join([str(error), *tails])) from None
        drain_seconds = time.monotonic() - drain_started
        chaos.check_exits()
        chaos.settle()
        dead = _dead_ids(exchange)
        rows = tuple(checker.check(name, ids, chaos.counts(name), dead.get(name, ()),
                                   rabbit.queue_depth(name, exchange=exchange)) for name in plan.services)
        progress(f"done: {chaos.sigkills} SIGKILLs, {len(chaos.exits)} replicas exited by themselves, "
                 f"drained in {drain_seconds:.1f} s")
        return Report(plan, rows, tuple(chaos.faults), chaos.sigkills, len(bodies), tuple(chaos.crash_points),
                      time.monotonic() - started, drain_seconds, tuple(chaos.exits))
    finally:
        for name in plan.services:
            services.stop(name, progress=quiet)
        if chaos is not None and chaos.proxy is not None:
            chaos.proxy.close()
        _topology(exchange, plan.services, topology.delete)
        etcd.close()


def without_dedup(plan: Plan) -> Plan:
    """The same plan with deduplication off: the control run, where the checker must fail."""
    return replace(plan, dedup=False)


__all__ = ["Plan", "Report", "run", "workload", "without_dedup", "cut_connection", "plot_reports"]
