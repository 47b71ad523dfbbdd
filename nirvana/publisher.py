"""svc's publisher on the kit's broker and exchange: what a notebook publishes with.

:class:`Publisher` publishes one event (a click, a few copies); :func:`publish_bodies` is the
kit's one way to publish a batch of ready bodies (the chaos run's slices, chapter 09's streams,
a chapter's prepared events): publisher confirms, pipelined, with the mandatory flag, and what the
broker did not confirm as routed sent again. Not AMQP transactions: a quorum queue whose leader
is killed can drop what a transaction handed it while ``tx_commit`` still succeeds; confirms are
the mechanism RabbitMQ recommends (https://www.rabbitmq.com/docs/confirms).
"""

from __future__ import annotations

import time

from svc import publisher
from svc.errors import BrokerRefused, BrokerUnavailable, PublishError

from .settings import current

# seconds for the connection, the topology and each publish to be confirmed: a broker on loopback
# confirms a click's events in milliseconds, and a presenter should not wait svc's 30 s to hear why not
PUBLISH_TIMEOUT = 5.0


class Publisher(publisher.Publisher):
    """:class:`svc.Publisher` whose broker URL, exchange and queue arguments default to the kit's
    (AMQP_URL, EVENTS_EXCHANGE, QUEUE_TYPE, DELIVERY_LIMIT: :mod:`nirvana.settings`), so events reach the queues the kit's services
    consume, and its deadline is :data:`PUBLISH_TIMEOUT`. Other keyword arguments as svc's
    (``services``, ``declare``). Raises svc's BrokerUnavailable / PublishError, one line each."""

    def __init__(self, amqp_url: str | None = None, exchange: str | None = None, *,
                 timeout: float = PUBLISH_TIMEOUT, **options) -> None:
        settings = current()
        # the queues declared as the kit's services declare them (QUEUE_TYPE, DELIVERY_LIMIT)
        options = {"queue_type": settings.queue_type, "delivery_limit": settings.delivery_limit, **options}
        super().__init__(amqp_url or settings.amqp_url, exchange or settings.exchange, timeout=timeout, **options)


BATCH_ATTEMPTS = 10     # connections tried for one batch (a node may be dying, a leader being elected)
BATCH_TIMEOUT = 30.0    # seconds for one attempt: connect, send every body, every confirm back
RETRY_PAUSE = 0.5       # seconds between two attempts: long enough for a quorum queue to elect a leader


def publish_bodies(bodies: list[bytes], *, exchange: str | None = None, url: str | None = None,
                   routing_key: str | None = None, attempts: int = BATCH_ATTEMPTS,
                   timeout: float = BATCH_TIMEOUT) -> int:
    """Publish ``bodies`` (JSON bytes, in order) to ``exchange`` and return how many were sent again.

    One connection per attempt to the first node of ``url`` that answers (one AMQP URL or several,
    comma-separated: a cluster's nodes); every body is sent, persistent and mandatory, then the
    broker's confirms are awaited (pipelined: one round trip per batch, not per body). What comes
    back nacked, returned unroutable, or unconfirmed when the connection or ``timeout`` ends is
    sent again on a new connection, up to ``attempts`` times; a body sent again may be in its
    queue twice (at-least-once: the consumers' claims make that harmless). The queues must be
    declared before. ``exchange``, ``url`` and ``routing_key`` default to the kit's settings
    (EVENTS_EXCHANGE, AMQP_URL, :mod:`nirvana.settings`).

    Raises svc's BrokerRefused at once for what no retry cures (login, vhost, permissions, a
    missing exchange), its PublishRefused (a PublishError too) for a publish refused by name (a
    body over the broker's max_message_size, a routing key over 255 bytes), PublishError (one
    line) when bodies are still unconfirmed after ``attempts``.
    """
    settings = current()
    url, exchange = url or settings.amqp_url, exchange or settings.exchange
    pending, again = list(bodies), 0
    for attempt in range(1, attempts + 1):
        batch = publisher.ConfirmedBatch(url, exchange, routing_key or settings.routing_key, pending,
                                         [""] * len(pending), timeout)
        try:
            result = batch.run()
            why = f"{result.nacked} nacked, {result.unroutable} unroutable"
        except BrokerRefused:   # no retry cures it: a login, a missing exchange, a publish refused by name
            raise
        except (BrokerUnavailable, PublishError) as error:
            why = str(error)
        pending = batch.unsettled()
        if not pending:
            return again
        if attempt < attempts:
            again += len(pending)
            time.sleep(RETRY_PAUSE)
    raise PublishError(f"{len(pending)} of {len(bodies)} events to {exchange!r} not confirmed after "
                       f"{attempts} attempts; the last: {why}")


__all__ = ["Publisher", "publish_bodies"]
