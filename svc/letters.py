"""What a dead letter svc publishes carries: the delivery's body and properties, as RabbitMQ's own
dead-lettering keeps them, plus the reason; and the reason for a body svc cannot read as it came."""

import pika

from . import amqp, topology

# content_encoding values that leave the body as it is (RFC 9110's "identity"; "utf-8", "utf8",
# "7bit", "8bit" and "binary" are charsets or MIME transfer encodings often set there by publishers)
PLAIN_ENCODINGS = frozenset({"", "identity", "utf-8", "utf8", "7bit", "8bit", "binary"})


def unreadable_encoding(properties) -> str:
    """The dead letter's reason when the delivery's ``content_encoding`` says its body is encoded
    (gzip, deflate, br...), which svc does not decode, else "". The body is dead-lettered as it
    came, the encoding kept with it (``letter_properties``)."""
    encoding = properties.content_encoding
    if encoding is None or encoding.strip().lower() in PLAIN_ENCODINGS:
        return ""
    return (f"body has content_encoding {encoding[:64]!r}: svc reads plain UTF-8 JSON only (not UTF-8 as it "
            "is); publish the event unencoded")


def letter_properties(properties, reason_headers: dict, user: str | None) -> pika.BasicProperties:
    """A dead letter's properties: the delivery's ``properties``, every one but ``expiration`` (the
    letter must not expire in the dead-letter queue), as RabbitMQ's own dead-lettering keeps them;
    its headers with ``reason_headers`` added. ``delivery_mode`` is kept as published (1 transient,
    2 persistent) and persistent when it was not set. A ``user_id`` other than ``user`` (svc's
    own, from AMQP_URL) is moved to a header (``amqp.own_user_id``: the broker would refuse it).
    Properties pika could not decode are kept as sent in RAW_PROPERTIES_HEADER."""
    headers = dict(properties.headers or {})
    headers.update(reason_headers)
    raw = amqp.raw_properties(properties)
    if raw:
        headers[topology.RAW_PROPERTIES_HEADER] = raw  # what pika could not decode, kept as sent
    user_id = amqp.own_user_id(properties, headers, user)
    return pika.BasicProperties(
        content_type=properties.content_type, content_encoding=properties.content_encoding, headers=headers,
        delivery_mode=properties.delivery_mode if properties.delivery_mode in (1, 2) else 2,
        priority=properties.priority, correlation_id=properties.correlation_id, reply_to=properties.reply_to,
        message_id=properties.message_id, timestamp=properties.timestamp, type=properties.type, user_id=user_id,
        app_id=properties.app_id, cluster_id=properties.cluster_id)
