"""A dead letter svc publishes keeps the event's body and every property but ``expiration``, plus
the reason headers, as RabbitMQ's own dead-lettering does (issue 21, item 4), against the real
RabbitMQ and etcd. A body svc cannot read because of its ``content_encoding`` (gzip) is
dead-lettered with the encoding kept and a reason that names it."""

import datetime
import gzip
import json

import pika

from svc import topology
from nirvana.testing import wait_for

PROPERTIES = dict(message_id="m-1", correlation_id="c-1", timestamp=1_700_000_000, app_id="shop", type="order.v1",
                  reply_to="replies", priority=3, user_id="guest", delivery_mode=2, content_type="text/plain",
                  cluster_id="c")


def _publish(world, body: bytes, **properties) -> None:
    channel = world.channel()
    channel.basic_publish(world.exchange, "foo", body, pika.BasicProperties(**properties))


def _dead_letter(world):
    """(properties, body) of the one dead letter of this world, taken (acked) from its queue."""
    queue = topology.dead_letter_queue(world.exchange)
    wait_for(lambda: world.dead_letters_waiting() >= 1, "a dead letter", timeout=30)
    method, properties, body = world.channel().basic_get(queue, auto_ack=True)
    return properties, body


def test_a_dead_letter_keeps_every_property_but_expiration(svc_world):
    orders = svc_world.service_name("orders")
    # Given a body that is not JSON, published with every property set, a TTL and a header of its own...
    _publish(svc_world, b"not json", expiration="600000", headers={"x-trace": "t-1"}, **PROPERTIES)
    # ... when svc dead-letters it...
    svc_world.start(orders)
    properties, body = _dead_letter(svc_world)
    # ... I expect the same body and properties, without the expiration (the letter must not expire
    # in the dead-letter queue), its header kept beside the reason headers.
    assert body == b"not json"
    got = {name: getattr(properties, name) for name in PROPERTIES}
    assert got == PROPERTIES and properties.expiration is None
    headers = properties.headers
    assert headers["x-trace"] == "t-1" and headers[topology.SERVICE_HEADER] == orders
    assert "not valid JSON" in headers[topology.REASON_HEADER] or "JSON" in headers[topology.REASON_HEADER]
    assert headers[topology.ROUTING_KEY_HEADER] == "foo"


def test_a_gzip_body_is_dead_lettered_with_its_encoding_and_a_reason_naming_it(svc_world):
    orders = svc_world.service_name("orders")
    event = json.dumps({"type": "new_order", "id": "zipped"}).encode()
    # Given a valid event, gzipped, published with content_encoding=gzip...
    _publish(svc_world, gzip.compress(event), content_type="application/json", content_encoding="gzip",
             delivery_mode=2, timestamp=int(datetime.datetime(2026, 1, 1).timestamp()))
    svc_world.start(orders, enable_etcd=True)
    properties, body = _dead_letter(svc_world)
    # ... I expect it dead-lettered whole: the gzip body, content_encoding kept, and a reason that
    # says the encoding is why (nothing silently lost, nothing processed).
    assert gzip.decompress(body) == event
    assert properties.content_encoding == "gzip" and properties.content_type == "application/json"
    reason = properties.headers[topology.REASON_HEADER]
    assert "gzip" in reason and "content_encoding" in reason, reason
    assert svc_world.effects(orders) == 0


def test_a_user_id_svc_may_not_publish_goes_to_a_header(svc_world):
    from svc.amqp import USER_ID_HEADER

    orders = svc_world.service_name("orders")
    # Given a poison event published by another user, its user_id that user's (the broker checks it)...
    user = svc_world.publish_as_another_user(b"not json", pika.BasicProperties(message_id="m-2"))
    # ... when svc (as guest) dead-letters it, I expect the letter published (RabbitMQ refuses a
    # user_id other than the publisher's own), that user_id kept in a header.
    [process] = svc_world.start(orders)
    properties, body = _dead_letter(svc_world)
    assert body == b"not json" and properties.message_id == "m-2"
    assert properties.user_id is None and properties.headers[USER_ID_HEADER] == user
    assert "closed the channel" not in process.log()
