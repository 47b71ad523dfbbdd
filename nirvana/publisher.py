"""svc's publisher on the kit's broker and exchange: what a notebook publishes with."""

from __future__ import annotations

from svc import publisher

from .settings import current


class Publisher(publisher.Publisher):
    """:class:`svc.Publisher` whose broker URL and exchange default to the kit's (AMQP_URL,
    EVENTS_EXCHANGE: :mod:`nirvana.settings`), so events reach the queues the kit's services
    consume. Other keyword arguments as svc's (``services``, ``declare``, ``timeout`` in s)."""

    def __init__(self, amqp_url: str | None = None, exchange: str | None = None, **options) -> None:
        settings = current()
        super().__init__(amqp_url or settings.amqp_url, exchange or settings.exchange, **options)


__all__ = ["Publisher"]
