"""RabbitMQ as the talk shows it: how many events wait in a service's queue, who consumes it.

Every question is a passive ``queue_declare``: it reads a queue's counts without creating or
changing anything. A queue that does not exist yet holds nothing and has no consumer, so it
reads as 0 (the services and ``./kit up`` declare the topology).
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import pika
import pika.exceptions

from svc import topology

from . import endpoints
from ._wait import Progress, poll

CONNECT_TIMEOUT = 2.0   # seconds: RabbitMQ answers on loopback at once or not at all
DEFAULT_TIMEOUT = 15.0
NOT_FOUND = 404


class RabbitUnavailable(ConnectionError):
    """RabbitMQ did not accept a connection."""


@dataclass(frozen=True)
class QueueCounts:
    """A queue's counts at one moment: ``messages`` ready for delivery, ``consumers`` attached."""

    messages: int = 0
    consumers: int = 0
    exists: bool = True


def _address(url: str) -> str:
    """host:port of an AMQP URL, never its password."""
    params = pika.URLParameters(url)
    return f"{params.host}:{params.port}"


@contextmanager
def _connection(url: str) -> Iterator[pika.BlockingConnection]:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = CONNECT_TIMEOUT
    params.blocked_connection_timeout = CONNECT_TIMEOUT
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as error:
        raise RabbitUnavailable(
            f"RabbitMQ is not answering at {_address(url)} ({type(error).__name__}): "
            "start the stack with `./kit up`"
        ) from None
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


def queue_counts(queue: str, *, url: str = endpoints.AMQP_URL) -> QueueCounts:
    """The counts of one queue by its full name (``events.orders``)."""
    with _connection(url) as connection:
        channel = connection.channel()
        try:
            frame = channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == NOT_FOUND:
                return QueueCounts(exists=False)
            raise
        return QueueCounts(frame.method.message_count, frame.method.consumer_count)


def purge_queues(queues: Iterable[str], *, url: str = endpoints.AMQP_URL) -> dict[str, int]:
    """Purge each queue that exists; returns {queue: messages removed}. Missing queues are skipped."""
    removed: dict[str, int] = {}
    with _connection(url) as connection:
        for queue in queues:
            # A passive declare of a missing queue closes the channel: one channel per queue.
            channel = connection.channel()
            try:
                channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == NOT_FOUND:
                    continue
                raise
            removed[queue] = channel.queue_purge(queue).method.message_count
            channel.close()
    return removed


def queue_of(service: str, exchange: str | None = None) -> str:
    """The name of a service's queue, as svc declares it (``events.<service>``)."""
    return topology.queue_name(service, exchange or topology.DEFAULT_EXCHANGE)


def dead_letter_queue(exchange: str | None = None) -> str:
    """The name of the dead-letter queue that goes with an exchange (``events.dead-letters``)."""
    return topology.dead_letter_queue(exchange or topology.DEFAULT_EXCHANGE)


def queue_depth(service: str, *, exchange: str | None = None, url: str = endpoints.AMQP_URL) -> int:
    """How many events wait in the service's queue (ready, not yet delivered)."""
    return queue_counts(queue_of(service, exchange), url=url).messages


def consumers(service: str, *, exchange: str | None = None, url: str = endpoints.AMQP_URL) -> int:
    """How many consumers the service's queue has: 1 per running replica."""
    return queue_counts(queue_of(service, exchange), url=url).consumers


def dead_letters(*, exchange: str | None = None, url: str = endpoints.AMQP_URL) -> int:
    """How many events wait in the dead-letter queue (never processable: invalid or conflicting)."""
    return queue_counts(dead_letter_queue(exchange), url=url).messages


def wait_for_depth(
    service: str,
    depth: int,
    *,
    exchange: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str = endpoints.AMQP_URL,
) -> int:
    """Wait until exactly ``depth`` events wait in the service's queue (0 = it caught up)."""
    return wait_for_queue(queue_of(service, exchange), depth, timeout=timeout, progress=progress, url=url)


def wait_for_dead_letters(
    count: int,
    *,
    exchange: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str = endpoints.AMQP_URL,
) -> int:
    """Wait until exactly ``count`` events wait in the dead-letter queue."""
    return wait_for_queue(dead_letter_queue(exchange), count, timeout=timeout, progress=progress, url=url)


def wait_for_queue(
    queue: str,
    depth: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str = endpoints.AMQP_URL,
) -> int:
    """Wait until exactly ``depth`` events wait in ``queue`` (by its full name)."""
    seen = poll(
        lambda: queue_counts(queue, url=url).messages,
        lambda messages: messages == depth,
        what=f"{depth} event(s) waiting in {queue}",
        timeout=timeout,
        progress=progress,
        describe=lambda messages: f"{messages} waiting",
    )
    progress(f"{queue}: {seen} waiting")
    return seen


def peek_dead_letters(
    limit: int = 20, *, exchange: str | None = None, url: str = endpoints.AMQP_URL
) -> list[str]:
    """One line per dead letter, ``<service>: <reason>``, sorted; the letters stay in the queue.

    Each letter is fetched without an acknowledgement; closing the channel hands them all back to
    the queue, so looking loses nothing.
    """
    lines = []
    with _connection(url) as connection:
        channel = connection.channel()
        queue = dead_letter_queue(exchange)
        try:
            for _ in range(limit):
                method, properties, _body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                headers = properties.headers or {}
                service = headers.get(topology.SERVICE_HEADER, "?")
                reason = headers.get(topology.REASON_HEADER, "no reason given")
                lines.append(f"{_text(service)}: {_text(reason)}")
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != NOT_FOUND:
                raise
        finally:
            if channel.is_open:
                channel.close()   # unacknowledged letters go back to the queue
    return sorted(lines)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


__all__ = [
    "RabbitUnavailable", "QueueCounts",
    "queue_counts", "queue_of", "dead_letter_queue",
    "queue_depth", "consumers", "dead_letters", "wait_for_depth", "wait_for_dead_letters",
    "wait_for_queue", "peek_dead_letters", "purge_queues",
]
