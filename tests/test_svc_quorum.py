"""Quorum queues and several broker nodes against the real RabbitMQ and etcd (issue 12): a poison
event stopped by the delivery limit, good events requeued past it still processed once, the kit
and svc declaring the same queues, several AMQP URLs with fail-over to the next node."""

import json
import os
import subprocess
import sys

import pika
import pytest

from nirvana import endpoints, rabbit, stack
from svc import keys, requeue, topology
from svc.event import parse
from svc.publisher import Publisher
from nirvana.testing import World, free_port, wait_for

LIMIT = 2


@pytest.fixture
def quorum_world(amqp_url, etcd_endpoint, tmp_path):
    """svc_world with quorum queues and a delivery limit of LIMIT."""
    world = World(amqp_url, etcd_endpoint, tmp_path, statsd=(endpoints.HOST, endpoints.STATSD_PORT),
                  rabbitmqctl=stack.rabbitmq_node().ctl(), queue_type="quorum", delivery_limit=LIMIT)
    yield world
    world.close()


def _queue_type(world, queue: str) -> str:
    rows = [line.split("\t") for line in world._rabbitmqctl("list_queues", "name", "type").splitlines()]
    return {row[0]: row[1] for row in rows if len(row) == 2}[queue]


def test_a_poison_event_is_dead_lettered_by_the_delivery_limit_with_x_death(quorum_world):
    world = quorum_world
    orders = world.service_name("orders")
    assert _queue_type(world, world.queue(orders)) == "quorum"
    world.publish(orders, {"type": "new_order", "id": "poison"})
    # Given an event that kills its consumer each time (CRASH_AT=claimed: SIGKILL before the work is
    # done), when the service is started again after every crash...
    crashes = 0
    while not world.dead_letters_waiting() and crashes < LIMIT + 3:
        [process] = world.start(orders, wait=False, crash_at="claimed")
        assert process.popen.wait(20) == -9, process.log()
        crashes += 1
        wait_for(lambda: world.depth(orders) == 1 or world.dead_letters_waiting(), "the event back or dead-lettered")
    # ... I expect it in the dead letters after LIMIT returns (LIMIT + 1 deliveries), with the
    # broker's x-death as its reason; never processed; the queue free for the next event.
    assert crashes == LIMIT + 1
    [(body, headers)] = world.dead_letters()
    assert b'"poison"' in body
    assert headers["x-death"][0]["reason"] == "delivery_limit"
    assert topology.dead_letter_reason(headers).startswith("dead-lettered by the broker: over the delivery limit")
    world.start(orders)
    world.publish(orders, {"type": "new_order", "id": "next"})
    wait_for(lambda: world.effects(orders, "next") == 1, "the next event processed")
    assert world.effects(orders, "poison") == 0 and world.depth(orders) == 0


def test_returns_carried_by_a_copy_past_the_limit_are_dead_lettered_by_svc(quorum_world):
    world = quorum_world
    orders = world.service_name("orders")
    channel = world.channel()
    channel.confirm_delivery()
    # Given copies whose earlier copies were returned LIMIT + 1 times and LIMIT times (their header)...
    for event_id, returned in (("over", LIMIT + 1), ("at", LIMIT)):
        channel.basic_publish("", world.queue(orders), json.dumps({"type": "new_order", "id": event_id}).encode(),
                              pika.BasicProperties(headers={requeue.RETURNED_HEADER: returned}, delivery_mode=2))
    # ... when svc takes them, I expect the first dead-lettered unprocessed with svc's reason, the second processed.
    world.start(orders)
    wait_for(lambda: world.effects(orders, "at") == 1 and world.dead_letters_waiting() == 1, "both settled")
    [(body, headers)] = world.dead_letters()
    assert b'"over"' in body and world.effects(orders, "over") == 0
    assert topology.dead_letter_reason(headers).startswith(f"returned to its queue {LIMIT + 1} times unsettled")


def test_svc_with_quorum_queues_stops_with_one_line_on_a_classic_queue_and_leaves_it(quorum_world):
    world = quorum_world
    orders = f"t{os.urandom(3).hex()}_orders"
    world.services.add(orders)
    # Given the service's queue declared classic without arguments (an earlier kit), empty and unused...
    topology.declare(world.channel(), world.exchange, services=(), queue_type="quorum")
    world.channel().queue_declare(world.queue(orders), durable=True)
    # ... when svc starts with QUEUE_TYPE=quorum, I expect exit 2 with one line naming the queue,
    # and the queue kept as it was (never turned into another type in place).
    [process] = world.start(orders, wait=False)
    assert process.popen.wait(20) == 2, process.log()
    [line] = [line for line in process.log().splitlines() if " ERROR " in line]
    assert f"queue '{world.queue(orders)}'" in line and "PRECONDITION_FAILED" in line
    assert _queue_type(world, world.queue(orders)) == "classic"


def test_an_event_requeued_more_often_than_the_limit_while_etcd_is_away_is_processed_once(quorum_world, own_etcd):
    world = quorum_world
    orders = world.service_name("orders")
    [process] = world.start(orders, enable_etcd=True, etcd_endpoints=own_etcd.endpoint, etcd_timeout=0.5)
    world.publish(orders, {"type": "new_order", "id": "before"})
    wait_for(lambda: _effects(world, own_etcd, orders).get("before") == 1, "the first event processed")
    # Given etcd gone, when an event is requeued (fail closed) more often than the delivery limit...
    own_etcd.stop()
    world.publish(orders, {"type": "new_order", "id": "waits"})
    wait_for(lambda: process.log().count("events requeued after") > LIMIT + 1 or world.dead_letters_waiting(),
             f"more than {LIMIT + 1} requeues", timeout=30)
    assert world.dead_letters_waiting() == 0
    # ... and etcd is back, I expect it processed once, not dead-lettered.
    own_etcd.start()
    wait_for(lambda: _effects(world, own_etcd, orders).get("waits") == 1, "the requeued event processed", timeout=30)
    wait_for(lambda: world.depth(orders) == 0, "the queue drained")
    world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: _effects(world, own_etcd, orders).get("marker") == 1, "a later event processed")
    assert _effects(world, own_etcd, orders) == {"before": 1, "waits": 1, "marker": 1}
    assert world.dead_letters_waiting() == 0 and process.alive()


def test_a_copy_requeued_at_the_tail_keeps_another_users_user_id_in_a_header(quorum_world, own_etcd):
    world = quorum_world
    orders = world.service_name("orders")
    [process] = world.start(orders, enable_etcd=True, etcd_endpoints=own_etcd.endpoint, etcd_timeout=0.5)
    # Given etcd away and an event published by another user, its user_id set (svc connects as guest)...
    own_etcd.stop()
    user = world.publish_as_another_user(json.dumps({"type": "new_order", "id": "theirs"}).encode(),
                                         pika.BasicProperties(delivery_mode=2))
    # ... when svc requeues it (fail closed) as copies at the queue's tail more often than the limit...
    wait_for(lambda: process.log().count("events requeued after") > LIMIT + 1 or world.dead_letters_waiting(),
             f"more than {LIMIT + 1} requeues", timeout=30)
    # ... I expect each copy taken by the broker (not the channel closed over the user_id, the
    # original returned and spent against the limit) and, etcd back, the event processed once.
    assert world.dead_letters_waiting() == 0 and "closed the channel" not in process.log()
    own_etcd.start()
    wait_for(lambda: _effects(world, own_etcd, orders).get("theirs") == 1, "the event processed", timeout=30)
    method, properties, _ = world.channel().basic_get(world.queue(orders), auto_ack=True)
    assert method is None and user


def test_an_event_held_at_each_stop_is_not_spent_against_the_limit(quorum_world):
    world = quorum_world
    orders = world.service_name("orders")
    event = {"type": "new_order", "id": "held"}
    # Given a sibling's live claim on the event (written here, on a lease of 60 s), so svc holds the
    # delivery aside unacked...
    lease = world.etcd.grant(60)
    claim = f"claimed {parse(json.dumps(event).encode()).digest} {lease:x}".encode()
    world.etcd.put(keys.dedup_key(world.prefix, orders, "held").encode(), claim, lease)
    world.publish(orders, event)
    # ... when the service is stopped (SIGTERM) while holding it, more often than the delivery limit...
    for _ in range(LIMIT + 1):
        [process] = world.start(orders, enable_etcd=True, claim_ttl=60)
        wait_for(lambda p=process: world.depth(orders) == 0 and "consuming" in p.log(), "the event delivered")
        assert process.stop() == 0
        wait_for(lambda: world.depth(orders) == 1 or world.dead_letters_waiting(), "the event back in the queue")
    # ... I expect it still in the queue (not dead-lettered), and processed once the claim is gone.
    assert world.dead_letters_waiting() == 0
    world.etcd.revoke(lease)
    world.start(orders, enable_etcd=True)
    wait_for(lambda: world.effects(orders, "held") == 1, "the held event processed")
    wait_for(lambda: world.depth(orders) == 0, "the queue drained")
    assert world.dead_letters_waiting() == 0


def _effects(world, etcd, service) -> dict:
    from svc import Etcd, counts_by_id
    from svc.config import parse_endpoints

    client = Etcd(parse_endpoints(etcd.endpoint), timeout=2.0)
    try:
        return counts_by_id(client, service, prefix=world.prefix)
    finally:
        client.close()


def test_the_kits_publisher_and_svc_declare_the_same_quorum_queue(quorum_world, monkeypatch, use_settings):
    from nirvana import publisher

    world = quorum_world
    orders = f"t{os.urandom(3).hex()}_orders"
    world.services.add(orders)
    use_settings(None)
    for variable, value in {"EVENTS_EXCHANGE": world.exchange, "QUEUE_TYPE": "quorum",
                            "DELIVERY_LIMIT": str(LIMIT), "AMQP_URL": world.amqp_url}.items():
        monkeypatch.setenv(variable, value)
    # Given the queue declared first by the kit's publisher, as the kit's settings say...
    with publisher.Publisher(services=(orders,)) as kit:
        assert kit.publish({"type": "new_order", "id": "k"}).ok
    assert _queue_type(world, world.queue(orders)) == "quorum"
    # ... when svc starts with the same settings, I expect no clash (exit 2) and the event processed.
    world.start(orders)
    wait_for(lambda: world.effects(orders, "k") == 1, "the kit's event processed")
    # svc.publish declares it alike, with the queue settings given; another limit is one line, exit 2.
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    for limit, status in ((LIMIT, 0), (LIMIT + 1, 2)):
        result = subprocess.run([sys.executable, "-m", "svc.publish", "--amqp-url", f"{dead},{world.amqp_url}",
                                 "--exchange", world.exchange, "--service", orders, "--queue-type", "quorum",
                                 "--delivery-limit", str(limit), "--input", '{"type":"new_order","id":"p"}'],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == status, result.stderr
    [line] = result.stderr.splitlines()
    assert "x-delivery-limit" in line and "nothing was published" in line
    wait_for(lambda: world.effects(orders, "p") == 1, "svc.publish's event processed")


def test_a_dead_first_url_and_the_live_node_second(svc_world):
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    urls = f"{dead},{svc_world.amqp_url}"
    orders = svc_world.service_name("orders")
    # Given AMQP_URL naming a closed port first, svc, its publisher and the kit's helpers use the second.
    [process] = svc_world.start(orders, amqp_url=urls)
    result = Publisher(urls, svc_world.exchange, services=(orders,)).publish({"type": "new_order", "id": "x"})
    assert result.ok
    wait_for(lambda: svc_world.effects(orders, "x") == 1, "the event processed")
    assert rabbit.queue_counts(svc_world.queue(orders), url=urls).consumers == 1
    assert "connected to amqp://guest:***@127.0.0.1:" in process.log() and process.alive()


def test_svc_fails_over_to_the_next_node_when_its_node_stops(svc_world, own_rabbitmq):
    orders = svc_world.service_name("orders")
    urls = f"{own_rabbitmq.url},{svc_world.amqp_url}"
    # Given svc on the first node of two...
    [process] = svc_world.start(orders, wait=False, amqp_url=urls)
    publisher = Publisher(own_rabbitmq.url, svc_world.exchange, services=(orders,))
    wait_for(lambda: "consuming" in process.log(), "svc consuming on the first node", timeout=20)
    first = publisher.publish({"type": "new_order", "id": "a"}, count=20, fresh_ids=True).ids
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == 20, "the first node's events processed")
    # ... when that node stops mid-stream, I expect svc on the second node, processing its events.
    own_rabbitmq.stop()
    svc_world.wait_consumers(orders, 1, [process], timeout=30)
    later = svc_world.publisher(orders).publish({"type": "new_order", "id": "b"}, count=20, fresh_ids=True).ids
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == 40, "the second node's events processed", timeout=20)
    assert set(svc_world.effects_by_id(orders)) == set(first) | set(later)
    port = svc_world.amqp_url.split("@")[1].split("/")[0]
    assert f"connected to amqp://guest:***@{port}" in process.log() and process.alive()
