"""The kit's cluster (``./kit up --cluster``): three etcd members, three RabbitMQ nodes, and svc on
quorum queues through a leader's death, a node's stop and a poison event.

The tests run themselves again in a network namespace of their own (``unshare --net``) with a
state folder of its own: inside, nothing answers on loopback, so the cluster takes the kit's ports
(2379, 5673...) and the machine's RabbitMQ, epmd and the shared stack are never seen nor touched.
They share ONE cluster in ONE namespace (``shared_cluster``: one inner run of them all,
tests/shared_namespace.py): brought up from nothing on the command line (``python -m nirvana up
--cluster``; the first test checks it), whole again before each fault test, and down on the command
line by the last test, which checks that nothing is left. Each outer test checks its own outcome
inside. Marked ``stack`` (tests/conftest.py runs them last); a cluster's start and stop takes
20-40 s, mostly RabbitMQ's: one cluster for the module, not one for the up-and-down test and one
for the fault tests (48 s of a worker's time in a suite run of 652 s).
"""

import json
import os
import subprocess
import sys
import time
import uuid

import pika
import psutil
import pytest
from conftest import RUN_TIMEOUT
from shared_namespace import in_shared_namespace, inside, run_together

from nirvana import checker, paths, rabbit, services, shape, stack
from nirvana.publisher import publish_bodies
from nirvana.stack import cluster, members
from svc import Etcd, projection, topology
from svc.config import parse_endpoints
from svc.effects import counts_by_id
from svc.errors import DedupUnavailable
from svc.event import parse
from svc.publisher import Publisher
from svc.stream import log_end
from nirvana.testing import wait_for

DRAIN_TIMEOUT = 90.0              # seconds for every event to be processed after the fault
EVENTS = 600

# last (tests/conftest.py), and the outer test waits for the inner run past pytest's 180 s default
pytestmark = [pytest.mark.stack, pytest.mark.cluster, pytest.mark.timeout(RUN_TIMEOUT + 90)]
SHARING = 6                       # tests on the shared cluster: the first outer one waits for their run
together = pytest.mark.timeout(RUN_TIMEOUT * SHARING + 90)


def quiet(_line: str) -> None:
    pass


def leftovers(kit: shape.Shape) -> list[str]:
    """Processes whose command line names the cluster's folder (etcd, beam, epmd of the cluster)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " ".join((process.info["environ"] or {}).values())
        except (psutil.Error, TypeError):
            continue
        if str(kit.folder) in text and process.pid != os.getpid():
            found.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:120]}")
    return found


def _world(kit: shape.Shape, **extra: str) -> dict:
    tag = uuid.uuid4().hex[:6]
    env = {**kit.environment(), "EVENTS_EXCHANGE": f"cluster-{tag}", "ETCD_PREFIX": f"/cluster-{tag}",
           "QUEUE_TYPE": "quorum", "CLAIM_TTL": "2", "ETCD_TIMEOUT": "1", "PREFETCH": "50", **extra}
    return {"tag": tag, "env": env, "exchange": env["EVENTS_EXCHANGE"], "prefix": env["ETCD_PREFIX"]}


def _bodies(tag: str, count: int) -> tuple[list[str], list[bytes]]:
    ids = [f"{tag}-{i}" for i in range(count)]
    return ids, [json.dumps({"type": "new_order", "id": event_id}).encode() for event_id in ids]


def live_url(kit: shape.Shape) -> str:
    """The AMQP URL of the first node that answers."""
    return next(url for url, node in zip(kit.amqp_urls, members.members(kit)[4:], strict=True)
                if cluster.probe(kit, node).up)


def _stream_with_fault(kit: shape.Shape, world: dict, fault) -> dict[str, checker.Row]:
    """orders and notify, 2 replicas each, dedup on, quorum queues; EVENTS events published in
    slices with ``fault()`` between the slices; every id accounted for."""
    names = topology.DEFAULT_SERVICES
    for name in names:
        services.start(name, dedup=True, replicas=2, env=world["env"], progress=quiet, timeout=60)
    ids, bodies = _bodies(world["tag"], EVENTS)
    slices = [bodies[n * len(bodies) // 6:(n + 1) * len(bodies) // 6] for n in range(6)]
    for n, part in enumerate(slices):
        # (to the first node that answers, with confirms: a nacked or lost copy is published again)
        publish_bodies(part, exchange=world["exchange"], url=kit.amqp_url)
        if n == 2:
            fault()   # events in flight: published, some claimed, some waiting
    url = live_url(kit)
    etcd = Etcd(parse_endpoints(kit.etcd_endpoints), timeout=2)

    def counts(name: str) -> dict[str, int]:
        for _attempt in range(len(kit.etcd)):   # the client fails over past a dead member
            try:
                return counts_by_id(etcd, name, prefix=world["prefix"])
            except DedupUnavailable:
                continue
        return counts_by_id(etcd, name, prefix=world["prefix"])

    def all_processed() -> bool:
        try:
            return [len(counts(name).keys() & set(ids)) for name in names] == [EVENTS] * len(names)
        except DedupUnavailable:   # no member answers while the survivors elect a leader: ask again
            return False
    try:
        wait_for(all_processed, f"{EVENTS} ids processed by each service", DRAIN_TIMEOUT)
        wait_for(lambda: all(rabbit.queue_depth(n, exchange=world["exchange"], url=url) == 0 for n in names),
                 "the service queues empty", 30)
        for name in names:
            services.stop(name, progress=quiet)
        return {name: checker.check(name, ids, counts(name), (),
                                    rabbit.queue_depth(name, exchange=world["exchange"], url=url)) for name in names}
    finally:
        etcd.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m nirvana ARGS`` as a user runs it (``./kit`` calls it), its output captured."""
    return subprocess.run([sys.executable, "-m", "nirvana", *args], cwd=paths.ROOT, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def one_cluster(request, tmp_path_factory):
    """Outside: the tests that ask for ``shared_cluster`` run once, together, in one namespace of
    their own (:class:`shared_namespace.Together`). Inside: the kit's cluster (etcd and RabbitMQ
    only) brought up once for them all from a fresh state folder, on the command line, as
    ``(its shape, the names of the tests run on it, the up's CompletedProcess)``; after the last,
    every service and member stopped (the last test's own ``down`` already did), and no process
    of the cluster left."""
    if not inside():
        yield run_together(request, tmp_path_factory.mktemp("cluster"), "shared_cluster")
        return
    kit = None
    try:
        up = cli("up", "--cluster", "etcd", "rabbitmq")
        kit = shape.recorded()
        assert up.returncode == 0 and kit is not None, up.stdout + up.stderr
        yield kit, [], up
    finally:
        services.stop_all(timeout=2)
        stack.down(progress=quiet)
    assert leftovers(kit) == []


@pytest.fixture
def shared_cluster(request, one_cluster):
    """Outside: the run of the tests together (each checks its own outcome there). Inside: the
    shared cluster's shape, whole (:func:`whole_again` after the test before); its services stopped
    afterwards. Each test's names are its own (``_world``): what one leaves never meets another."""
    if not inside():
        yield one_cluster
        return
    kit, ran, _up = one_cluster
    if ran:
        whole_again(kit, ran[-1])
    ran.append(request.node.name)
    yield kit
    services.stop_all(timeout=2)


def whole_again(kit: shape.Shape, after: str) -> None:
    """Start again every member stopped or killed (:func:`cluster.up`: idempotent; it waits until
    an etcd leader is known and node 1 sees the three nodes running), then check every member
    healthy and started by the kit, and one etcd leader. Raises AssertionError naming ``after``, the
    test the cluster was not whole again after (StackError from cluster.up: a member did not start)."""
    rows = cluster.up(kit, progress=quiet)
    assert all(row.healthy and row.origin == "started by kit" for row in rows), f"after {after}: {rows}"
    etcds = sorted(row.role for row in rows if row.name.startswith("etcd-"))
    assert etcds == ["follower", "follower", "leader"], f"after {after}: {rows}"


@together
def test_up_cluster_from_a_fresh_state_brings_three_members_of_each(request, shared_cluster, one_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    # Given a fresh state folder and nothing answering on loopback, when the cluster is brought up
    # on the command line (the module's fixture: one_cluster)
    up = one_cluster[2]
    assert up.returncode == 0, up.stdout + up.stderr
    # I expect three healthy etcd members, one leader, and three RabbitMQ nodes in one cluster
    rows = {row.name: row for row in stack.status(["etcd", "rabbitmq"])}
    assert sorted(rows) == ["epmd", "etcd-1", "etcd-2", "etcd-3", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert all(row.healthy and row.origin == "started by kit" for row in rows.values())
    assert sorted(rows[f"etcd-{i}"].role for i in (1, 2, 3)) == ["follower", "follower", "leader"]
    kit = shape.recorded()
    assert kit is not None and kit.amqp == (5673, 5674, 5675)
    assert members.running_nodes(kit, 2) == sorted(members.node_name(kit, i) for i in (1, 2, 3))
    status = cli("status", "etcd", "rabbitmq")
    assert status.returncode == 0, status.stderr
    assert "leader" in status.stdout and status.stdout.count("running") == 3
    # and a second up to be a no-op that starts nothing
    again = cli("up", "--cluster", "etcd", "rabbitmq")
    assert again.returncode == 0 and "starting" not in again.stdout, again.stdout


@together
def test_a_sigkilled_etcd_leader_mid_stream_loses_and_doubles_nothing(request, shared_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    _etcd_leader_killed(shared_cluster)


def _etcd_leader_killed(kit: shape.Shape) -> None:
    # Given orders and notify, two replicas each, deduplicating through the three etcd members
    world = _world(kit)
    killed = []

    def fault() -> None:
        # When the etcd leader is SIGKILLed while events flow
        leader = cluster.etcd_leader(kit)
        assert leader is not None
        cluster.stop(kit, [leader], timeout=0)
        killed.append(leader.name)
    rows = _stream_with_fault(kit, world, fault)
    # I expect another member to lead, and every id processed exactly once by each service
    assert killed and cluster.etcd_leader(kit) not in (None, cluster.member(kit, killed[0]))
    print(checker.render(rows.values()))
    assert [(r.lost, r.duplicated, r.unexpected, r.processed_once) for r in rows.values()] == [(0, 0, 0, EVENTS)] * 2


@together
def test_a_stopped_rabbitmq_node_mid_stream_loses_and_doubles_nothing(request, shared_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    _queue_leader_stopped(shared_cluster)


def _queue_leader_stopped(kit: shape.Shape) -> None:
    # Given orders and notify, two replicas each, on quorum queues replicated on the three nodes
    world = _world(kit)
    queue = topology.queue_name("orders", exchange=world["exchange"])
    stopped = []

    def fault() -> None:
        # When the node that leads orders' queue is stopped while events flow
        leader = cluster.queue_leader(kit, queue)
        assert leader is not None, "orders' queue is not a quorum queue with a leader"
        cluster.stop(kit, [leader])
        stopped.append(leader)
    rows = _stream_with_fault(kit, world, fault)
    # I expect the queue led by another node, and every id processed exactly once by each service
    assert stopped and cluster.queue_leader(kit, queue) not in (None, stopped[0])
    print(checker.render(rows.values()))
    assert [(r.lost, r.duplicated, r.unexpected, r.processed_once) for r in rows.values()] == [(0, 0, 0, EVENTS)] * 2


@together
def test_a_replay_reads_the_whole_log_while_its_leader_node_is_stopped(request, shared_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    _log_leader_stopped(shared_cluster)


def _log_leader_stopped(kit: shape.Shape) -> None:
    # Given events in the log, a stream replicated on the three nodes
    world = _world(kit)
    ids, bodies = _bodies(world["tag"], EVENTS)
    bodies = [json.dumps({"type": "new_order", "id": i, "args": {"sku": f"s{n % 7}"}}).encode() for n, i in enumerate(ids)]
    with Publisher(kit.amqp_url, world["exchange"], queue_type="quorum"):
        pass   # the topology, the log with it
    publish_bodies(bodies[:EVENTS // 2], exchange=world["exchange"], url=kit.amqp_url)
    log = topology.log_name(world["exchange"])
    # When the node that leads the log is stopped, more events are published and a reader starts
    leader = cluster.queue_leader(kit, log)
    assert leader is not None, "the log is not a stream with a leader"
    cluster.stop(kit, [leader])
    publish_bodies(bodies[EVENTS // 2:], exchange=world["exchange"], url=live_url(kit))
    services.start("billing", dedup=True, wait=False, progress=quiet,
                   env={**world["env"], "SOURCE": "log", "LOG_OFFSET": "first"})
    # I expect the whole log read from the nodes left: its view that of every event, each applied once
    etcd = Etcd(parse_endpoints(kit.etcd_endpoints), timeout=2)
    try:
        end = log_end(live_url(kit), world["exchange"])
        wait_for(lambda: projection.read_tracking(etcd, world["prefix"], "billing", 1) == end,
                 f"billing's tracking record at {end}", DRAIN_TIMEOUT)
        view = projection.read_view(etcd, world["prefix"], "billing", 1)
        assert projection.digest(view) == projection.digest(projection.build(parse(b) for b in bodies))
        assert projection.applied_twice(etcd, world["prefix"], "billing", 1) == 0
        assert cluster.queue_leader(kit, log) not in (None, leader)
    finally:
        etcd.close()


@together
def test_a_poison_event_is_stopped_by_the_delivery_limit(request, shared_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    _poison(shared_cluster)


def _poison(kit: shape.Shape) -> None:
    # Given orders on a quorum queue with a delivery limit of 3, whose every replica crashes on
    # the first event it takes (CRASH_AT=claimed), and is started again as a supervisor would
    limit = 3
    world = _world(kit, DELIVERY_LIMIT=str(limit))
    url = kit.amqp_urls[0]
    starts = 0
    services.start("orders", env=world["env"], progress=quiet, timeout=60)
    services.stop("orders", progress=quiet)
    # When one event is published
    [event_id], bodies = _bodies(world["tag"], 1)
    publish_bodies(bodies, exchange=world["exchange"], url=url)
    deadline = time.monotonic() + 120
    while rabbit.queue_depth("orders", exchange=world["exchange"], url=url) and time.monotonic() < deadline:
        services.start("orders", env={**world["env"], "CRASH_AT": "claimed"}, progress=quiet, wait=False)
        starts += 1
        wait_for(lambda: not services.instances("orders"), "the replica to crash on the event", 30)
        # The depth counts ready messages: until the broker sees the crashed replica's connection
        # close, its delivery is still out (unacked) and the depth reads 0 with a return to come (a
        # suite run on 5 workers ended this loop after 3 starts). The broker drops the consumer and
        # returns (or dead-letters) its delivery together.
        wait_for(lambda: not rabbit.consumers("orders", exchange=world["exchange"], url=url),
                 "the broker to see the replica's connection closed", 30, interval=0.2)
        assert starts <= limit + 2, "the event keeps coming back: no delivery limit"
    # I expect it in the dead letters with the broker's x-death reason, after the limit's returns
    # and one more (RabbitMQ dead-letters a message returned more than `limit` times)
    assert starts == limit + 1
    # (at-least-once dead-lettering: the quorum queue's depth shows 0 while its leader still hands
    # the event to the dead letters and waits for their confirm; under load the letter came later
    # than the first read: `[] == [(id, 'delivery_limit')]` in a suite run on 5 workers)
    deaths = wait_for(lambda: _dead_letter_deaths(url, world["exchange"]), "the poison event in the dead letters",
                      DRAIN_TIMEOUT, interval=0.5)
    assert [(body_id, reason) for body_id, reason in deaths] == [(event_id, "delivery_limit")]


def _dead_letter_deaths(url: str, exchange: str) -> list[tuple[str, str]]:
    """(event id, the broker's x-death reason) of each letter in the dead letters; left there."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        found = []
        while True:
            method, properties, body = channel.basic_get(topology.dead_letter_queue(exchange))
            if method is None:
                return found
            deaths = (properties.headers or {}).get("x-death") or [{}]
            found.append((json.loads(body)["id"], str(deaths[0].get("reason", b""), "utf-8")
                          if isinstance(deaths[0].get("reason"), bytes) else str(deaths[0].get("reason"))))
    finally:
        connection.close()


@together
def test_down_stops_every_member_of_the_cluster_and_leaves_nothing(request, shared_cluster):
    if not in_shared_namespace(request, shared_cluster):
        return
    # Given the cluster whole after every fault test, when it is brought down on the command line
    down = cli("down")
    # I expect every member stopped, no process of the cluster left behind, no shape recorded
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped") == 7, down.stdout
    assert leftovers(shared_cluster) == []
    assert shape.recorded() is None
