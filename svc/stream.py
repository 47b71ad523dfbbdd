"""The log as a stream over AMQP 0.9.1: its consume argument, and the offsets it keeps.

A stream (RabbitMQ docs "Streams") is read by a consumer that passes ``x-stream-offset`` (``first``,
``last``, ``next``, an offset or a timestamp) and sets a per-consumer prefetch; each delivery
carries its offset in the ``x-stream-offset`` header; acks are credit and delete nothing. Offsets
grow by one per event but are not a count: a segment's start takes offsets of its own.

Every short read of the log goes through ``read``: a reader that meets the stream's member away
(``member_away``: a stream declared a moment ago, or one whose member the broker is restarting)
reads again on a fresh connection within its own timeout.
"""

import datetime
import logging
import time

from . import amqp, topology
from .amqp import BROKER_ERRORS, closed_by_broker
from .config import split_urls

log = logging.getLogger(__name__)

OFFSET_HEADER = "x-stream-offset"
CONNECT_TIMEOUT = 10.0
INTERNAL_ERROR = 541   # AMQP 0-9-1 connection error: RabbitMQ's answer when a channel process crashed
RETRY_PAUSE = 0.05     # seconds between two reads of a stream whose member is away (the pause doubles, up to
RETRY_PAUSE_LIMIT = 0.5   # this), within the reader's own timeout
# RabbitMQ 3.10's refusals of a reader while the stream has no member on the node to read from
# (rabbit_stream_queue: 406 "does not have a replica on the local node"; rabbit_channel: 506
# "does not have a running local replica")
_AWAY_TEXTS = ("does not have a replica", "does not have a running local replica")


def offset_argument(text: str):
    """The ``x-stream-offset`` consume argument for LOG_OFFSET ``text``: ``first``/``last``/``next``,
    an offset (int), or a time (a ``datetime``: pika sends it as an AMQP timestamp, whole seconds)."""
    if text in ("first", "last", "next"):
        return text
    if text.isdigit():
        return int(text)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))


def member_away(error: BaseException) -> bool:
    """Whether ``error`` (one of BROKER_ERRORS, raised while a stream was being read) is the broker
    saying the stream's member is not up to read from, which a fresh reader a moment later cures.

    RabbitMQ 3.10 answers a consume only after it has sent basic.consume-ok: it then opens an osiris
    reader on the member process the stream's record names; a member not (yet, or any more) alive
    makes that call exit ``noproc`` (osiris:init_reader), the channel process crashes, and the broker
    closes the whole connection with 541 INTERNAL_ERROR (a channel crash has no AMQP reply of its
    own). Seen on a stream deleted and declared again a moment before (CI) and, here, on one whose
    member process is killed (the broker log says "Non-AMQP exit reason '{noproc, ... osiris,
    init_reader ...}'"). Also RabbitMQ's own refusals while the node has no member yet: 406 "does
    not have a replica on the local node", 506 "does not have a running local replica"."""
    closed = closed_by_broker(error, connection=True)
    if closed is None:
        return False
    code, text = closed
    return code == INTERNAL_ERROR or any(away in text for away in _AWAY_TEXTS)


def read(amqp_url: str, exchange: str, start, on_message, done, timeout: float, *, prefetch: int, doing: str,
         again=lambda: None, step: float = 0.1) -> bool:
    """Read the log ``<exchange>.log`` from ``start`` (an ``x-stream-offset``: see ``offset_argument``)
    with a consumer of ``prefetch`` credit, ``on_message(channel, method, properties, body)`` called
    for each delivery (it acks: acks are credit), until ``done()`` or ``timeout`` seconds; returns
    ``done()`` (False: the time ran out first).

    A read that meets the stream's member away (``member_away``) is started again from ``start`` on
    a fresh connection, ``again()`` called first (to drop what the failed read collected), after a
    pause of RETRY_PAUSE seconds doubling up to RETRY_PAUSE_LIMIT, as long as ``timeout`` lasts;
    past it, and for any other broker error, raises svc's error (``amqp.translate``: one line,
    BrokerUnavailable for the 541) saying ``doing``. ``timeout`` counts from the first consume's
    answer; connecting may add up to CONNECT_TIMEOUT per try."""
    deadline = None   # ``timeout`` counts from the first consume's answer (connecting is bounded apart)
    name = topology.log_name(exchange)
    pause = RETRY_PAUSE
    while True:
        connection = amqp.connect_first(split_urls(amqp_url), CONNECT_TIMEOUT, name=f"log {name}")[0]
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=prefetch)
            try:
                channel.basic_consume(name, on_message, arguments={OFFSET_HEADER: start})
            finally:
                deadline = deadline or time.monotonic() + timeout
            return amqp.pump_until(connection, done, max(deadline - time.monotonic(), 0), step=step)
        except BROKER_ERRORS as error:
            left = (deadline or time.monotonic() + timeout) - time.monotonic()
            if not member_away(error) or left <= 0:
                raise amqp.translate(error, doing) from None
            log.info("%s: the stream's member is away (%s); reading again in %.2f s", doing,
                     closed_by_broker(error, connection=True), min(pause, left))
        finally:
            try:
                connection.close()
            except BROKER_ERRORS:
                pass  # pika rejects what it buffered, which a stream refuses by closing the connection
        again()
        # the one pause between reads: bounded by the reader's own deadline, for the member to come up
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, RETRY_PAUSE_LIMIT)


def takes_reader(amqp_url: str, exchange: str = topology.DEFAULT_EXCHANGE, hold: float = 0.2) -> bool:
    """Whether the log takes a reader now: a consume from its first event is answered, the channel
    then answers a passive declare (so the broker opened the osiris reader: the member was up; see
    ``member_away``), and the connection stands ``hold`` more seconds. False while the stream's
    member is away; svc's error (one line) for any other broker error (no such log: 404)."""
    name = topology.log_name(exchange)
    connection = amqp.connect_first(split_urls(amqp_url), CONNECT_TIMEOUT, name=f"log {name} probe")[0]
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(name, lambda channel, method, properties, body: None, arguments={OFFSET_HEADER: "first"})
        channel.queue_declare(name, passive=True)   # answered after the consume's reader was opened
        amqp.pump_until(connection, lambda: False, hold)   # a 541 a moment later, on a member going away
        return True
    except BROKER_ERRORS as error:
        if member_away(error):
            return False
        raise amqp.translate(error, f"reading the log {name}") from None
    finally:
        try:
            connection.close()
        except BROKER_ERRORS:
            pass  # pika rejects what it buffered, which a stream refuses by closing the connection


def log_end(amqp_url: str, exchange: str = topology.DEFAULT_EXCHANGE, timeout: float = 2.0) -> int | None:
    """The offset of the last event in the log (read from its last chunk to its end: see
    ``_edge``), None if it is empty (known after ``timeout`` seconds without a delivery);
    BrokerUnavailable/BrokerRefused (one line) if RabbitMQ does not answer or has no such log. A
    stream's member away is read again within ``timeout`` (``read``)."""
    return _edge(amqp_url, exchange, "last", timeout)


def log_start(amqp_url: str, exchange: str = topology.DEFAULT_EXCHANGE, timeout: float = 2.0) -> int | None:
    """The offset of the first event the log still keeps (0 until retention drops a segment), None
    if it is empty. (The message count a passive declare gives for a stream lags by seconds.)
    Errors as ``log_end``."""
    return _edge(amqp_url, exchange, "first", timeout)


LAST_PREFETCH = 1000   # credit of the reader of the last chunk (a chunk may hold more: see _edge)
ROUND_TRIP_DISPATCH = 0.01   # seconds _edge turns the loop after its round trip: what came before the answer
                             # is in pika's buffer already, dispatched at the first turn


def _edge(amqp_url: str, exchange: str, where: str, timeout: float) -> int | None:
    """The first delivery of a read from ``where`` (``first``), or the last one (``last``: the last
    chunk to its end).

    A quiet turn of the I/O loop does not end the last chunk: the broker sends a stream's consumer at
    most its prefetch (LAST_PREFETCH) before acks give it credit again, and a chunk can hold more (a
    loaded broker writes thousands of confirmed publishes as one), so its rest comes after the acks'
    round trip; on a loaded machine that took longer than a turn, and a CI run read the end of 20,001
    events as 19,996. So a quiet turn is followed by one round trip on the channel (basic.qos): RabbitMQ
    3.10's channel process reads the stream itself and sends what an ack's credit lets it read while
    it handles that ack (rabbit_stream_queue:settle), before it answers the next method, so every
    delivery the acks called for arrives before the answer; none new after it is the end."""
    seen: list[int] = []
    counted = [-1]   # deliveries seen at the last turn
    channels = []

    def on_message(channel, method, properties, body):
        seen.append(int(properties.headers[OFFSET_HEADER]))
        channel.basic_ack(method.delivery_tag)
        channels[:] = [channel]

    def whole() -> bool:
        if where == "first" and seen:
            return True
        before, counted[0] = counted[0], len(seen)
        if not seen or counted[0] != before:
            return False
        quiet = len(seen)   # a quiet turn: one round trip, and the end if it brings nothing more
        channels[0].basic_qos(prefetch_count=LAST_PREFETCH)   # answered after what the acks called for
        # what came before the answer waits in pika's buffer: dispatched to on_message at once
        amqp.pump_until(channels[0].connection, lambda: len(seen) > quiet, ROUND_TRIP_DISPATCH, step=ROUND_TRIP_DISPATCH)
        counted[0] = len(seen)
        return len(seen) == quiet

    def again() -> None:
        seen.clear()
        counted[0] = -1

    read(amqp_url, exchange, where, on_message, whole, timeout, prefetch=1 if where == "first" else LAST_PREFETCH,
         doing=f"reading the {where} event of the log {topology.log_name(exchange)}", again=again)
    if not seen:
        return None
    return seen[0] if where == "first" else max(seen)
