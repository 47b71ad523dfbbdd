"""nirvana.deadletters: list, re-publish and discard dead letters on the real RabbitMQ.

Each test has its own exchange (so its own dead-letter queue); the letters are published the way
``svc`` publishes them (to the dead-letter exchange, reason and service in the headers). The last
test runs real ``svc`` processes: a poison event dead-lettered, fixed through the panel, processed
once.
"""

import dataclasses
import json
import uuid

import pika
import pytest

from nirvana import deadletters, rabbit, settings
from svc import topology
from nirvana.testing import free_port, wait_for

SERVICES = ("orders", "notify")


@pytest.fixture
def world(amqp_url):
    """An exchange of its own with the talk's two queues and a dead-letter queue; removed after."""
    exchange = f"t-dl-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    topology.declare(channel, exchange, services=SERVICES)
    channel.confirm_delivery()

    def letter(service: str, reason: str, body: bytes) -> None:
        headers = {topology.REASON_HEADER: reason, topology.SERVICE_HEADER: service,
                   topology.ROUTING_KEY_HEADER: "foo"}
        channel.basic_publish(topology.dead_letter_exchange(exchange), "foo", body,
                              pika.BasicProperties(headers=headers, delivery_mode=2))

    def take(service: str) -> list[bytes]:
        bodies = []
        while True:
            method, _properties, body = channel.basic_get(topology.queue_name(service, exchange), auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)

    yield exchange, letter, take
    topology.delete(channel, exchange, services=SERVICES)
    connection.close()


def out_text(panel) -> str:
    return "".join(item.get("text", "") for item in panel.output.outputs)


def test_peek_lists_service_reason_and_body_sorted_and_leaves_them(world, amqp_url):
    exchange, letter, _take = world
    letter("orders", "event has no id", b'{"type": "new_order"}')
    letter("notify", "body is not JSON (Expecting value at char 0)", b"hello")
    first = deadletters.peek(exchange=exchange, url=amqp_url)
    assert [str(one) for one in first] == [
        "notify: body is not JSON (Expecting value at char 0): hello",
        'orders: event has no id: {"type": "new_order"}',
    ]
    assert first[1].routing_key == "foo"
    # Looking twice sees the same letters: nothing was taken.
    assert deadletters.peek(exchange=exchange, url=amqp_url) == first


def test_the_helpers_and_the_panel_read_the_kits_settings(world, amqp_url, use_settings):
    # Given the kit's settings naming this test's exchange (EVENTS_EXCHANGE) and the real broker
    exchange, letter, _take = world
    letter("orders", "event has no id", b'{"type": "new_order"}')
    use_settings(dataclasses.replace(settings.current(), amqp_url=amqp_url, exchange=exchange))
    # When the helpers and the panel are called without an exchange or a URL, I expect that letter
    assert [str(one) for one in deadletters.peek()] == ['orders: event has no id: {"type": "new_order"}']
    assert [str(one) for one in deadletters.DeadLetterPanel().letters] == [str(deadletters.peek()[0])]
    # Given settings whose AMQP_URL names a port where nothing listens
    port = free_port()
    use_settings(dataclasses.replace(settings.current(), amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F"))
    # I expect every call to go there (and fail in one line naming it), not to the stack's broker
    for call in (deadletters.peek, lambda: deadletters.discard(deadletters.DeadLetter("orders", "r", b"x"))):
        with pytest.raises(rabbit.RabbitUnavailable, match=f"127.0.0.1:{port}"):
            call()
    panel = deadletters.DeadLetterPanel()
    assert panel.letters == [] and f"127.0.0.1:{port}" in panel.last_error


def test_no_dead_letter_queue_reads_as_no_letters(amqp_url):
    assert deadletters.peek(exchange=f"t-none-{uuid.uuid4().hex[:8]}", url=amqp_url) == []


def test_republish_sends_the_fixed_body_to_that_service_only_then_removes_the_letter(world, amqp_url):
    exchange, letter, take = world
    letter("orders", "event has no id", b'{"type": "new_order"}')
    letter("notify", "event has no id", b'{"type": "new_order"}')
    orders_letter = next(one for one in deadletters.peek(exchange=exchange, url=amqp_url) if one.service == "orders")
    fixed = '{"type": "new_order", "id": "fixed-1"}'
    sent = deadletters.republish(orders_letter, fixed, exchange=exchange, url=amqp_url)
    assert sent.body == fixed.encode()
    assert take("orders") == [fixed.encode()]
    assert take("notify") == []          # the sibling's queue is untouched
    assert [one.service for one in deadletters.peek(exchange=exchange, url=amqp_url)] == ["notify"]


def test_discard_removes_exactly_the_letter_shown(world, amqp_url):
    exchange, letter, _take = world
    for body in (b"one", b"two", b"three"):
        letter("orders", "body is not JSON", body)
    shown = deadletters.peek(exchange=exchange, url=amqp_url)
    two = next(one for one in shown if one.body == b"two")
    deadletters.discard(two, exchange=exchange, url=amqp_url)
    assert sorted(one.body for one in deadletters.peek(exchange=exchange, url=amqp_url)) == [b"one", b"three"]
    # A letter already gone is an error that says so, not a silent success.
    with pytest.raises(deadletters.DeadLetterError, match="someone took it already"):
        deadletters.discard(two, exchange=exchange, url=amqp_url)


def test_republish_to_a_queue_that_does_not_exist_keeps_the_letter(world, amqp_url):
    exchange, letter, _take = world
    letter("billing", "event has no id", b"{}")
    [shown] = deadletters.peek(exchange=exchange, url=amqp_url)
    with pytest.raises(deadletters.DeadLetterError, match="does not exist"):
        deadletters.republish(shown, b'{"type": "new_order", "id": "x"}', exchange=exchange, url=amqp_url)
    assert deadletters.peek(exchange=exchange, url=amqp_url) == [shown]


def test_panel_buttons_are_the_calls_in_code(world, amqp_url):
    exchange, letter, take = world
    letter("orders", "unknown type 'refund' (known: new_order, ban_user)", b'{"type": "refund", "id": "r1"}')
    letter("orders", "event has no id", b'{"type": "new_order"}')
    panel = deadletters.DeadLetterPanel(exchange=exchange, url=amqp_url)
    assert [str(one) for one in panel.letters] == [
        'orders: event has no id: {"type": "new_order"}',
        "orders: unknown type 'refund' (known: new_order, ban_user): {\"type\": \"refund\", \"id\": \"r1\"}",
    ]
    # Selecting shows the body in the editor; the re-publish button sends the edited body.
    assert panel.select("orders", "no id") is not None
    assert panel.body.value == '{"type": "new_order"}'
    panel.body.value = '{"type": "new_order", "id": "n1"}'
    panel.republish_button.click()
    assert panel.last_error is None
    assert take("orders") == [b'{"type": "new_order", "id": "n1"}']
    assert [one.reason for one in panel.letters] == ["unknown type 'refund' (known: new_order, ban_user)"]
    # The discard button removes the selected letter; the list is read again.
    panel.discard_button.click()
    assert panel.letters == [] and panel.selected is None
    assert deadletters.peek(exchange=exchange, url=amqp_url) == []
    assert "discarded, was for orders" in out_text(panel)
    # With nothing selected, a click says so in the output and in last_error.
    panel.republish_button.click()
    assert panel.last_error == "no dead letter selected: look again, then choose one"
    # Another hand took a letter after the panel showed it: the error is shown, not raised.
    letter("notify", "event has no id", b"{}")
    panel.refresh_button.click()
    deadletters.discard(panel.selected, exchange=exchange, url=amqp_url)
    panel.discard_button.click()
    assert "someone took it already" in panel.last_error


def test_a_poison_event_fixed_through_the_panel_is_processed_once(svc_world):
    # Given a real orders service with deduplication, and an event without an id...
    orders = svc_world.service_name("orders")
    svc_world.start(orders, enable_etcd=True)
    svc_world.publish(orders, {"type": "new_order", "args": {"sku": "A-1"}})
    wait_for(lambda: deadletters.peek(exchange=svc_world.exchange, url=svc_world.amqp_url),
             "the event without an id dead-lettered")
    panel = deadletters.DeadLetterPanel(exchange=svc_world.exchange, url=svc_world.amqp_url)
    [letter] = panel.letters
    assert (letter.service, letter.reason) == (orders, "event has no id")
    # ... when the presenter adds the id and re-publishes it, and the upstream fix sends it again...
    fixed = json.dumps({"type": "new_order", "id": "fixed-7", "args": {"sku": "A-1"}})
    assert panel.republish(fixed) is not None, panel.last_error
    svc_world.publish(orders, {"type": "new_order", "id": "fixed-7", "args": {"sku": "A-1"}})
    # ... I expect it processed exactly once, the letter gone, the copy skipped.
    wait_for(lambda: svc_world.depth(orders) == 0 and svc_world.effects(orders, "fixed-7") == 1,
             "the fixed event processed")
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1, "a later event processed")
    assert svc_world.effects(orders, "fixed-7") == 1
    assert deadletters.peek(exchange=svc_world.exchange, url=svc_world.amqp_url) == []


def test_whose_letter_it_is_comes_from_svcs_header_or_the_brokers_x_death():
    assert topology.dead_letter_service({topology.SERVICE_HEADER: b"notify"}, "events") == "notify"
    assert topology.dead_letter_service({"x-death": [{"queue": b"events.orders", "reason": b"delivery_limit"}]},
                                        "events") == "orders"
    assert topology.dead_letter_service({"x-death": [{"queue": "elsewhere"}]}, "events") == "elsewhere"
    assert topology.dead_letter_service({}, "events") == topology.dead_letter_service(None) == "?"


def test_a_letter_the_broker_dead_lettered_names_its_service_and_reason_and_goes_back_there(world, amqp_url):
    exchange, _letter, take = world
    body, queue = b'{"type": "new_order", "id": "late"}', topology.queue_name("orders", exchange)
    # Given an event the broker itself dead-letters (its TTL ends in orders' queue, as a quorum
    # queue's delivery limit would: no header of svc's, only the broker's x-death)...
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().basic_publish("", queue, body, pika.BasicProperties(expiration="1"))
    connection.close()
    wait_for(lambda: rabbit.dead_letters(exchange=exchange, url=amqp_url) == 1, "the expired event dead-lettered")
    # ... I expect the panel's letter and rabbit's peek to name orders and the broker's reason (they
    # said "?" and "no reason given"), and a re-publish to reach orders' queue.
    [letter] = deadletters.peek(exchange=exchange, url=amqp_url)
    assert (letter.service, letter.reason) == (
        "orders", f"dead-lettered by the broker: expired (message TTL) in queue {queue} (count 1)")
    assert rabbit.peek_dead_letters(exchange=exchange, url=amqp_url) == [f"orders: {letter.reason}"]
    deadletters.republish(letter, exchange=exchange, url=amqp_url)
    assert take("orders") == [body]
