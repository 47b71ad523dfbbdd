"""nirvana.publish_bodies, the kit's one way to publish a batch: confirms, pipelined, what the
broker did not confirm sent again; against the real RabbitMQ, each test on its own exchange."""

import json
import uuid

import pika
import pytest

from nirvana import rabbit
from nirvana.publisher import publish_bodies
from svc import topology
from svc.errors import PublishError
from svc.publisher import ConfirmedBatch


def _frame(method):
    return type("Frame", (), {"method": method})


def test_unsettled_is_what_the_broker_did_not_confirm_as_routed():
    # Given 6 bodies sent: 1-3 acked at once, 4 nacked, 5 returned unroutable then acked, 6 never answered
    bodies = [f"b{i}".encode() for i in range(1, 7)]
    batch = ConfirmedBatch("amqp://x", "events", "foo", bodies, [""] * 6, 1.0)
    batch.pending.update(range(1, 7))
    batch.sent = True
    batch._close = lambda: None   # no connection here: the bookkeeping alone
    for method in (pika.spec.Basic.Ack(3, multiple=True), pika.spec.Basic.Nack(4)):
        batch._on_confirm(_frame(method))
    batch._on_return(None, None, None, b"b5")
    batch._on_confirm(_frame(pika.spec.Basic.Ack(5)))
    # I expect to send again the nacked, the unanswered, then the returned one; and all of them
    # when nothing was sent yet (the connection never opened)
    assert batch.unsettled() == [b"b4", b"b6", b"b5"]
    assert ConfirmedBatch("amqp://x", "events", "foo", bodies, [""] * 6, 1.0).unsettled() == bodies


@pytest.fixture
def exchange(amqp_url):
    """A fresh exchange with queues for `orders` and `notify` (``services`` empty: no queue at all)."""
    made = []

    def make(services=topology.DEFAULT_SERVICES) -> str:
        name = f"nirvana-test-{uuid.uuid4().hex[:8]}"
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        topology.declare(connection.channel(), name, services=services)
        connection.close()
        made.append((name, services))
        return name
    yield make
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    for name, services in made:
        topology.delete(connection.channel(), name, services=services)
    connection.close()


def test_every_body_of_a_batch_is_in_every_queue_in_order(exchange, amqp_url):
    # Given 5,000 bodies and an exchange with the talk's two queues
    name = exchange()
    bodies = [json.dumps({"type": "new_order", "id": f"p-{i}"}).encode() for i in range(5000)]
    # When they are published as one batch
    again = publish_bodies(bodies, exchange=name, url=amqp_url)
    # I expect none sent again, each queue holding all 5,000, first published first
    assert again == 0
    assert [rabbit.queue_depth(s, exchange=name, url=amqp_url) for s in topology.DEFAULT_SERVICES] == [5000, 5000]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        got = [connection.channel().basic_get(topology.queue_name("orders", exchange=name), auto_ack=True)[2]
               for _ in range(3)]
    finally:
        connection.close()
    assert got == bodies[:3]


def test_a_batch_no_queue_takes_is_an_error_not_a_silent_loss(exchange, amqp_url):
    # Given an exchange no queue is bound to
    name = exchange(services=())
    # When a batch is published to it, with two attempts
    # I expect one line saying none was taken (an AMQP transaction committed them silently)
    with pytest.raises(PublishError, match=r"^3 of 3 events to 'nirvana-test-\w+' not confirmed after 2 "
                                           r"attempts; the last: 0 nacked, 3 unroutable$"):
        publish_bodies([b'{"type": "new_order", "id": "u"}'] * 3, exchange=name, url=amqp_url, attempts=2)
