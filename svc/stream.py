"""The log as a stream over AMQP 0.9.1: its consume argument, and the offsets it keeps.

A stream (RabbitMQ docs "Streams") is read by a consumer that passes ``x-stream-offset`` (``first``,
``last``, ``next``, an offset or a timestamp) and sets a per-consumer prefetch; each delivery
carries its offset in the ``x-stream-offset`` header; acks are credit and delete nothing. Offsets
grow by one per event but are not a count: a segment's start takes offsets of its own.
"""

import datetime

from . import amqp, topology
from .amqp import BROKER_ERRORS
from .config import split_urls

OFFSET_HEADER = "x-stream-offset"
CONNECT_TIMEOUT = 10.0


def offset_argument(text: str):
    """The ``x-stream-offset`` consume argument for LOG_OFFSET ``text``: ``first``/``last``/``next``,
    an offset (int), or a time (a ``datetime``: pika sends it as an AMQP timestamp, whole seconds)."""
    if text in ("first", "last", "next"):
        return text
    if text.isdigit():
        return int(text)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))


def log_end(amqp_url: str, exchange: str = topology.DEFAULT_EXCHANGE, timeout: float = 2.0) -> int | None:
    """The offset of the last event in the log (read from its last chunk), None if it is empty
    (known after ``timeout`` seconds without a delivery); BrokerUnavailable/BrokerRefused (one
    line) if RabbitMQ does not answer or has no such log."""
    return _edge(amqp_url, exchange, "last", timeout)


def log_start(amqp_url: str, exchange: str = topology.DEFAULT_EXCHANGE, timeout: float = 2.0) -> int | None:
    """The offset of the first event the log still keeps (0 until retention drops a segment), None
    if it is empty. (The message count a passive declare gives for a stream lags by seconds.)"""
    return _edge(amqp_url, exchange, "first", timeout)


def _edge(amqp_url: str, exchange: str, where: str, timeout: float) -> int | None:
    connection = amqp.connect_first(split_urls(amqp_url), CONNECT_TIMEOUT, name=f"log {where}")[0]
    seen: list[int] = []
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1 if where == "first" else 1000)

        def on_message(channel, method, properties, body):
            seen.append(int(properties.headers[OFFSET_HEADER]))
            channel.basic_ack(method.delivery_tag)

        channel.basic_consume(topology.log_name(exchange), on_message, arguments={OFFSET_HEADER: where})
        counted = [-1]   # deliveries seen at the last turn: none new after some came is the whole last chunk

        def whole() -> bool:
            if where == "first" and seen:
                return True
            before, counted[0] = counted[0], len(seen)
            return bool(seen) and counted[0] == before

        amqp.pump_until(connection, whole, timeout, step=0.1)
    except BROKER_ERRORS as error:
        raise amqp.translate(error, f"reading the {where} event of the log {topology.log_name(exchange)}") from None
    finally:
        try:
            connection.close()
        except BROKER_ERRORS:
            pass  # pika rejects what it buffered, which a stream refuses by closing the connection
    if not seen:
        return None
    return seen[0] if where == "first" else max(seen)
