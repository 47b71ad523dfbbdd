"""svc's publisher on the kit's broker and exchange: what a notebook publishes with."""

from __future__ import annotations

from svc import publisher

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


__all__ = ["Publisher"]
