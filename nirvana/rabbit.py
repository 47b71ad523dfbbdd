"""RabbitMQ as the talk shows it: how many events wait in a service's queue, who consumes it.

Every question is a passive ``queue_declare``: it reads a queue's counts without creating or
changing anything. A queue that does not exist is not "0 waiting": nothing keeps events for it,
and the exchange routes them to the other queues only, so the helpers raise :class:`NoSuchQueue`
("no such queue ...") instead of reading 0. A service declares its queue when it starts; a
publisher declares the queues of the services it is told about (``Publisher(services=...)``).
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import pika

from svc import amqp, topology
from svc.errors import SvcError

from ._wait import Progress, poll
from .errors import NoSuchQueue, RabbitUnavailable
from .settings import current

CONNECT_TIMEOUT = 2.0   # seconds for TCP, the AMQP handshake and a blocked connection: RabbitMQ on
                        # loopback answers at once or not at all
DEFAULT_TIMEOUT = 15.0


@dataclass(frozen=True)
class QueueCounts:
    """A queue's counts at one moment: ``messages`` ready for delivery, ``consumers`` attached."""

    messages: int = 0
    consumers: int = 0
    exists: bool = True


@contextmanager
def _connection(url: str | None, doing: str) -> Iterator[pika.BlockingConnection]:
    """A connection through svc's broker edge (:mod:`svc.amqp`: every wait bounded by
    CONNECT_TIMEOUT seconds, one attempt); any broker error inside, ``doing`` something, becomes one
    line as RabbitUnavailable (the URL's password masked)."""
    url = url or current().amqp_url
    connection = None
    try:
        connection = amqp.connect(url, CONNECT_TIMEOUT, name="nirvana")
        yield connection
    except SvcError as error:   # connect() translated it already
        raise RabbitUnavailable(str(error)) from None
    except amqp.BROKER_ERRORS as error:
        raise RabbitUnavailable(str(amqp.translate(error, doing, url=url))) from None
    finally:
        amqp.close_quietly(connection)   # one the broker already dropped: nothing left to release


def queue_counts(queue: str, *, url: str | None = None) -> QueueCounts:
    """The counts of one queue by its full name (``events.orders``)."""
    with _connection(url, f"reading the counts of {queue}") as connection:
        counts = amqp.passive_declare(connection.channel(), queue)
        if counts is None:
            return QueueCounts(exists=False)
        return QueueCounts(counts.message_count, counts.consumer_count)


def purge_queues(queues: Iterable[str], *, url: str | None = None) -> dict[str, int]:
    """Purge each queue that exists; returns {queue: messages removed}. Missing queues are skipped."""
    removed: dict[str, int] = {}
    with _connection(url, "purging the kit's queues") as connection:
        for queue in queues:
            # A passive declare of a missing queue closes the channel: one channel per queue.
            channel = connection.channel()
            if amqp.passive_declare(channel, queue) is None:
                continue
            removed[queue] = channel.queue_purge(queue).method.message_count
            channel.close()
    return removed


def queue_of(service: str, exchange: str | None = None) -> str:
    """The name of a service's queue, as svc declares it (``events.<service>``); the exchange is
    the kit's (EVENTS_EXCHANGE, :mod:`nirvana.settings`) unless given."""
    return topology.queue_name(service, exchange or current().exchange)


def dead_letter_queue(exchange: str | None = None) -> str:
    """The name of the dead-letter queue that goes with an exchange (``events.dead-letters``)."""
    return topology.dead_letter_queue(exchange or current().exchange)


def existing_queue_counts(queue: str, *, url: str | None = None) -> QueueCounts:
    """``queue_counts`` of a queue that must exist; raises NoSuchQueue (or RabbitUnavailable)."""
    counts = queue_counts(queue, url=url)
    if not counts.exists:
        raise NoSuchQueue(queue)
    return counts


def queue_depth(service: str, *, exchange: str | None = None, url: str | None = None) -> int:
    """How many events wait in the service's queue (ready, not yet delivered).

    Raises NoSuchQueue when the queue does not exist (the service never started and no publisher
    declared it), RabbitUnavailable when RabbitMQ does not answer.
    """
    return existing_queue_counts(queue_of(service, exchange), url=url).messages


def consumers(service: str, *, exchange: str | None = None, url: str | None = None) -> int:
    """How many consumers the service's queue has: 1 per running replica. Raises NoSuchQueue."""
    return existing_queue_counts(queue_of(service, exchange), url=url).consumers


def dead_letters(*, exchange: str | None = None, url: str | None = None) -> int:
    """How many events wait in the dead-letter queue (never processable: invalid or conflicting).
    Raises NoSuchQueue."""
    return existing_queue_counts(dead_letter_queue(exchange), url=url).messages


def delete_queue(service: str, *, exchange: str | None = None, url: str | None = None) -> int:
    """Delete the service's queue and the events in it; how many were waiting (0 if it did not
    exist). For a demo service (chapter 1's ``billing``) that should not keep collecting copies
    of every event once it is gone; a running service declares its queue again when it reconnects."""
    queue = queue_of(service, exchange)
    with _connection(url, f"deleting {queue}") as connection:
        frame = connection.channel().queue_delete(queue)
    return frame.method.message_count


def wait_for_depth(
    service: str,
    depth: int,
    *,
    exchange: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str | None = None,
) -> int:
    """Wait until exactly ``depth`` events wait in the service's queue (0 = it caught up)."""
    return wait_for_queue(queue_of(service, exchange), depth, timeout=timeout, progress=progress, url=url)


def wait_for_dead_letters(
    count: int,
    *,
    exchange: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str | None = None,
) -> int:
    """Wait until exactly ``count`` events wait in the dead-letter queue."""
    return wait_for_queue(dead_letter_queue(exchange), count, timeout=timeout, progress=progress, url=url)


def wait_for_queue(
    queue: str,
    depth: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str | None = None,
) -> int:
    """Wait until exactly ``depth`` events wait in ``queue`` (by its full name).

    A queue that does not exist is waited for too (a service may be declaring it); at the deadline
    the TimeoutError says "no such queue" rather than "0 waiting".
    """
    seen = poll(
        lambda: queue_counts(queue, url=url),
        lambda counts: counts.exists and counts.messages == depth,
        what=f"{depth} event(s) waiting in {queue}",
        timeout=timeout,
        progress=progress,
        describe=lambda counts: f"{counts.messages} waiting" if counts.exists else "no such queue",
    )
    progress(f"{queue}: {seen.messages} waiting")
    return seen.messages


def peek_dead_letters(
    limit: int = 20, *, exchange: str | None = None, url: str | None = None
) -> list[str]:
    """One line per dead letter, ``<service>: <reason>``, sorted; the letters stay in the queue.
    Raises NoSuchQueue when the dead-letter queue does not exist.

    Each letter is fetched without an acknowledgement; closing the channel hands them all back to
    the queue, so looking loses nothing.
    """
    lines = []
    queue = dead_letter_queue(exchange)
    with _connection(url, f"reading {queue}") as connection:
        channel = connection.channel()
        try:
            with amqp.translated(f"reading {queue}"):
                for _ in range(limit):
                    method, properties, _body = channel.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    headers = properties.headers or {}
                    service = topology.dead_letter_service(headers, exchange or current().exchange)
                    reason = topology.dead_letter_reason(headers)  # svc's reason, or the broker's x-death
                    lines.append(f"{service}: {reason}")
        except SvcError as error:
            if amqp.missing(error):
                raise NoSuchQueue(queue) from None
            raise
        finally:
            amqp.close_quietly(channel)   # unacknowledged letters go back to the queue
    return sorted(lines)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


__all__ = [
    "RabbitUnavailable", "NoSuchQueue", "QueueCounts",
    "queue_counts", "existing_queue_counts", "queue_of", "dead_letter_queue",
    "queue_depth", "consumers", "dead_letters", "delete_queue", "wait_for_depth", "wait_for_dead_letters",
    "wait_for_queue", "peek_dead_letters", "purge_queues",
]
