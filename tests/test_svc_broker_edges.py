"""svc at the broker's edges (issue 8, cases 1-5) against the real RabbitMQ and etcd: refusals no
retry can cure, a dead-letter queue that refuses publishes, work longer than the heartbeat, a
consumer the broker cancels, a message whose headers pika cannot decode, the broker's own
dead-lettering. Each test failed on main before svc/amqp.py and the consumer's changes."""

import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import uuid

import pika
import pika.data
import pytest
from conftest import need, need_rabbitmqctl

from svc import Etcd, topology
from svc.config import parse_endpoints
from svc.effects import count
from nirvana.testing import OwnEtcd, ServiceProcess, graphite_total, wait_for

NEW_ORDER = {"type": "new_order", "id": "good"}


def _fresh_service(world, base: str = "orders") -> str:
    """A service name of this world whose queue is NOT declared yet (the test declares it)."""
    name = f"t{uuid.uuid4().hex[:6]}_{base}"
    world.services.add(name)
    return name


def _graphite(graphite_url, target):
    """The total so far; 0 while graphite-web does not answer (a stack test restarting it)."""
    try:
        return graphite_total(graphite_url, target)
    except OSError:
        return 0


def _exited(process, timeout: float = 15.0) -> int:
    wait_for(lambda: process.popen.poll() is not None, f"{process.service} to exit", timeout)
    return process.popen.returncode


# -- A. refusals -------------------------------------------------------------------------------

def test_a_queue_that_exists_with_other_arguments_stops_svc_with_one_line_and_exit_2(svc_world):
    orders = _fresh_service(svc_world)
    queue = svc_world.queue(orders)
    # Given the service's queue already declared as a quorum queue (svc declares a classic one)...
    topology.declare(svc_world.channel(), svc_world.exchange, services=())
    svc_world.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    # ... when svc starts, I expect one line naming the queue, the argument and what to do; exit 2.
    [process] = svc_world.start(orders, wait=False)
    assert _exited(process) == 2, process.log()
    log = process.log()
    [line] = [line for line in log.splitlines() if "refused" in line]
    assert f"queue '{queue}'" in line and "x-queue-type" in line and "quorum" in line
    assert f"rabbitmqctl delete_queue {queue}" in line
    assert "Traceback" not in log and "reconnecting" not in log


def _full_dead_letter_queue(world) -> str:
    """Make the world's dead-letter queue refuse publishes (max-length 1, reject-publish) and fill
    it with one earlier dead letter; the policy's name."""
    need_rabbitmqctl("to set a policy")
    dead_letters = topology.dead_letter_queue(world.exchange)
    topology.declare(world.channel(), world.exchange, services=())
    policy = world.set_policy("dlq-full", f"^{re.escape(dead_letters)}$", {"max-length": 1, "overflow": "reject-publish"})
    world.channel().basic_publish("", dead_letters, b"an earlier dead letter")
    depth = lambda: world.channel().queue_declare(dead_letters, passive=True).method.message_count  # noqa: E731
    wait_for(lambda: depth() == 1, "the earlier dead letter queued")
    return policy


def test_a_dead_letter_queue_that_refuses_publishes_touches_only_that_message(svc_world):
    orders = svc_world.service_name("orders")
    # Given the dead-letter queue full (max-length 1, reject-publish) with one earlier dead letter...
    policy = _full_dead_letter_queue(svc_world)
    # ... and an invalid event and a good one in one window (dedup off)...
    svc_world.publish(orders, b"not json")
    svc_world.publish(orders, NEW_ORDER)
    [process] = svc_world.start(orders)
    # ... I expect the good event processed once and the refused dead letter kept and retried.
    wait_for(lambda: svc_world.effects(orders, "good") >= 1, "the good event processed")
    wait_for(lambda: process.log().count("dead letter refused") >= 3, "the refused dead letter retried", timeout=15)
    assert svc_world.effects(orders, "good") == 1
    assert svc_world.depth(orders) == 0, "the kept message was requeued"
    assert "reconnecting" not in process.log() and process.alive()
    # When the dead-letter queue takes publishes again, the kept message is dead-lettered, not lost.
    svc_world.clear_policy(policy)
    letters = []
    wait_for(lambda: letters.extend(svc_world.dead_letters()) or len(letters) >= 2, "both dead letters", timeout=15)
    assert sorted(body for body, _ in letters) == [b"an earlier dead letter", b"not json"]
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1, "a later event processed")
    assert svc_world.effects(orders, "good") == 1


def test_a_refused_dead_letter_is_counted(svc_world, graphite_url):
    orders = svc_world.service_name("orders")
    _full_dead_letter_queue(svc_world)
    svc_world.start(orders)
    svc_world.publish(orders, b"not json")
    wait_for(lambda: _graphite(graphite_url, f"stats_counts.{orders}_dead_letter_refused") >= 2,
             "dead_letter_refused counted", timeout=30, interval=0.5)


# -- B. pika's I/O loop ------------------------------------------------------------------------

@pytest.mark.slow
def test_work_longer_than_the_heartbeat_keeps_the_connection(svc_world):
    orders = svc_world.service_name("orders")
    # Given a 2 s heartbeat and 8 s of work per window (dedup off)...
    [process] = svc_world.start(orders, amqp_url=svc_world.amqp_url + "?heartbeat=2", work_ms=8000)
    svc_world.publish(orders, NEW_ORDER)
    wait_for(lambda: svc_world.effects(orders, "good") >= 1, "the event processed", timeout=20)
    # ... I expect heartbeats to flow during the work: no reconnect, so no redelivery, once only.
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1, "a later event processed", timeout=25)
    assert svc_world.effects(orders, "good") == 1
    assert "reconnecting" not in process.log(), process.log()


def test_waiting_on_a_silent_etcd_keeps_the_connection(svc_world):
    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    with tempfile.TemporaryDirectory() as data:
        etcd = OwnEtcd(data_dir=f"{data}/etcd")
        etcd.start()
        try:
            orders = svc_world.service_name("orders")
            [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=etcd.endpoint, etcd_timeout=6,
                                        amqp_url=svc_world.amqp_url + "?heartbeat=2")
            # Given etcd frozen (it takes requests, never answers) with a 6 s deadline per call...
            etcd.signal(signal.SIGSTOP)
            svc_world.publish(orders, NEW_ORDER)
            wait_for(lambda: "etcd unavailable" in process.log(), "a claim to time out", timeout=20)
            # ... when etcd answers again, I expect the event processed once, the connection kept.
            etcd.signal(signal.SIGCONT)
            client = Etcd(parse_endpoints(etcd.endpoint))
            try:
                effects = lambda: count(client, orders, "good", prefix=svc_world.prefix)  # noqa: E731
                wait_for(lambda: effects() >= 1, "the event processed", timeout=30)
                svc_world.publish(orders, {"type": "new_order", "id": "marker"})
                wait_for(lambda: count(client, orders, "marker", prefix=svc_world.prefix) == 1,
                         "a later event processed", timeout=15)
                assert effects() == 1
            finally:
                client.close()
            assert "reconnecting" not in process.log(), process.log()
        finally:
            etcd.signal(signal.SIGCONT)
            etcd.stop()


def test_a_consumer_the_broker_cancels_consumes_again(svc_world):
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders)
    # Given the service's queue deleted while svc consumes (the broker cancels the consumer),
    # then declared again and an event published to it...
    svc_world.channel().queue_delete(svc_world.queue(orders))
    topology.declare(svc_world.channel(), svc_world.exchange, services=(orders,))
    svc_world.publish(orders, NEW_ORDER)
    # ... I expect the cancel logged, the topology declared again, the event processed within seconds.
    wait_for(lambda: svc_world.effects(orders, "good") == 1, "the event processed after the cancel", timeout=10)
    assert svc_world.consumers(orders) == 1
    assert "cancelled by the broker" in process.log() and process.alive()


# -- C. nothing leaves a queue silently ----------------------------------------------------------

class _RawTimestamp(int):
    """An int sent as an AMQP timestamp ('T') exactly as given: what other clients put on the wire."""


@pytest.fixture
def raw_timestamps(monkeypatch):
    encode = pika.data.encode_value

    def encode_value(pieces, value):
        if isinstance(value, _RawTimestamp):
            pieces.append(struct.pack(">cQ", b"T", value))
            return 9
        return encode(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)


def test_a_header_pika_cannot_decode_is_dead_lettered_and_the_next_event_processed(svc_world, raw_timestamps):
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders)
    # Given an event whose headers hold milliseconds in a timestamp (pika: "year 55843 is out of
    # range"), then a good event...
    svc_world.channel().basic_publish(svc_world.exchange, "foo", b'{"type":"new_order","id":"poison"}',
                                      pika.BasicProperties(headers={"sent": _RawTimestamp(1700000000000)}))
    svc_world.publish(orders, NEW_ORDER)
    # ... I expect the good event processed, the poison one dead-lettered with its reason.
    wait_for(lambda: svc_world.effects(orders, "good") == 1, "the good event processed", timeout=10)
    letters = wait_for(svc_world.dead_letters, "the poison message dead-lettered")
    [(body, headers)] = letters
    assert body == b'{"type":"new_order","id":"poison"}'
    assert "cannot be decoded" in headers[topology.REASON_HEADER] and "year" in headers[topology.REASON_HEADER]
    assert svc_world.effects(orders, "poison") == 0
    assert "reconnecting" not in process.log() and process.alive()


def test_messages_the_broker_dead_letters_land_in_the_dead_letters_with_a_reason(svc_world):
    orders = svc_world.service_name("orders")
    # Given an event that expires in the service's queue (a per-message TTL set by its publisher)...
    svc_world.channel().basic_publish(svc_world.exchange, "foo", b'{"type":"new_order","id":"late"}',
                                      pika.BasicProperties(expiration="1"))
    # ... I expect it in the dead letters, its x-death read into a reason.
    letters = wait_for(svc_world.dead_letters, "the expired event dead-lettered")
    [(body, headers)] = letters
    assert body == b'{"type":"new_order","id":"late"}'
    reason = topology.dead_letter_reason(headers)
    assert "expired" in reason and svc_world.queue(orders) in reason


def test_a_queue_an_earlier_kit_declared_gets_its_dead_letter_exchange_when_empty(svc_world):
    empty, busy = _fresh_service(svc_world, "empty"), _fresh_service(svc_world, "busy")
    channel = svc_world.channel()
    # Given two queues declared without arguments (as the kit did before), one holding an event...
    for service in (empty, busy):
        channel.queue_declare(svc_world.queue(service), durable=True)
    channel.basic_publish("", svc_world.queue(busy), b'{"type":"new_order","id":"kept"}')
    wait_for(lambda: svc_world.depth(busy) == 1, "the event queued")
    # ... when the topology is declared, I expect the empty one declared again with the dead-letter
    # exchange (a message expiring there is dead-lettered) and the other kept, its event too.
    channel = topology.declare(channel, svc_world.exchange, services=(empty, busy))
    channel.basic_publish(svc_world.exchange, "foo", b"x", pika.BasicProperties(expiration="1"))
    letters = wait_for(svc_world.dead_letters, "the expired event dead-lettered")
    assert [topology.dead_letter_reason(h) for _, h in letters] == [
        f"dead-lettered by the broker: expired (message TTL) in queue {svc_world.queue(empty)} (count 1)"]
    assert svc_world.depth(busy) >= 1  # the queue kept, with its event


# -- svc.publish -------------------------------------------------------------------------------

def _publish_cli(world, *args):
    return subprocess.run([sys.executable, "-m", "svc.publish", "--amqp-url", world.amqp_url,
                           "--input", '{"type":"new_order","id":"1"}', *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("case", ["exchange of another type", "reserved exchange name", "no such exchange",
                                  "wrong password", "no such vhost"])
def test_publish_refusals_are_one_line_and_exit_2(svc_world, case):
    exchange = svc_world.exchange
    args = ["--exchange", exchange, "--service", _fresh_service(svc_world)]
    if case == "exchange of another type":
        svc_world.channel().exchange_declare(exchange, exchange_type="direct")
        words = f"exchange '{exchange}'"
    elif case == "reserved exchange name":
        args = ["--exchange", f"amq.{exchange}"]
        words = "ACCESS_REFUSED"
    elif case == "no such exchange":
        args = ["--exchange", exchange, "--no-declare"]
        words = f"no exchange '{exchange}'"
    elif case == "wrong password":
        args = ["--amqp-url", svc_world.amqp_url.replace("guest@", "not-the-password@")]
        words = "user and password"
    else:
        args = ["--amqp-url", svc_world.amqp_url.rsplit("/", 1)[0] + f"/{exchange}"]
        words = "vhost"
    result = _publish_cli(svc_world, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert words in line and "is RabbitMQ running" not in line and "not-the-password" not in line


# -- B, the kind: a connection the broker blocks ---------------------------------------------------

@pytest.mark.slow
def test_sigterm_stops_svc_within_10_s_while_the_broker_blocks_its_connection(svc_world, own_rabbitmq, tmp_path):
    orders = f"t{uuid.uuid4().hex[:6]}_orders"
    connection = pika.BlockingConnection(pika.URLParameters(own_rabbitmq.url))
    channel = connection.channel()
    topology.declare(channel, svc_world.exchange, services=(orders,))
    channel.confirm_delivery()
    channel.basic_publish(svc_world.exchange, "foo", b"not json")  # svc will publish its dead letter
    connection.close()
    # Given a memory alarm on the node (RabbitMQ blocks every connection that publishes)...
    own_rabbitmq.ctl("set_vm_memory_high_watermark", "0.000001")
    env = svc_world.env(orders, amqp_url=own_rabbitmq.url)
    process = ServiceProcess(orders, env, tmp_path / "orders.log")
    try:
        # ... when svc's dead letter is held by the block and svc is asked to stop...
        wait_for(lambda: "blocked" in own_rabbitmq.ctl("list_connections", "state"),
                 "svc's connection blocked", timeout=20)
        process.signal(signal.SIGTERM)
        # ... I expect it gone within 10 s; the blocked dead letter's message stays in the queue.
        assert process.popen.wait(10) == 1
        assert "did not stop within 8 s" in process.log() and "Traceback" not in process.log()
        own_rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
        check = pika.BlockingConnection(pika.URLParameters(own_rabbitmq.url))
        try:
            depth = check.channel().queue_declare(svc_world.queue(orders), passive=True).method.message_count
            assert depth == 1
        finally:
            check.close()
    finally:
        process.kill()
