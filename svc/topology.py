"""The RabbitMQ topology shared by the consumer, the publisher and the kit, declared idempotently.

Every name derives from the events exchange, so a test can isolate itself with its own exchange.
"""

import logging

import pika.exceptions

log = logging.getLogger(__name__)

DEFAULT_EXCHANGE = "events"
DEFAULT_SERVICES = ("orders", "notify")
BINDING_KEY = "#"

REASON_HEADER = "x-nirvana-reason"
SERVICE_HEADER = "x-nirvana-service"
ROUTING_KEY_HEADER = "x-nirvana-routing-key"
RAW_PROPERTIES_HEADER = "x-nirvana-raw-properties"  # properties pika could not decode, as sent
DEAD_LETTER_EXCHANGE_ARG = "x-dead-letter-exchange"


def queue_name(service: str, exchange: str = DEFAULT_EXCHANGE) -> str:
    """The durable queue of a service: ``events.<service>``."""
    return f"{exchange}.{service}"


def dead_letter_exchange(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dlx"


def dead_letter_queue(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dead-letters"


def declare(channel, exchange: str = DEFAULT_EXCHANGE, services=DEFAULT_SERVICES):
    """Declare the exchange, the dead-letter exchange and queue, and each service's bound queue;
    the channel to go on with (a refused declaration closes a channel, see below).

    ``channel`` is a pika BlockingChannel. Declaring what exists with the same arguments is a no-op.
    Each service queue names the dead-letter exchange (``x-dead-letter-exchange``), so what the
    broker itself dead-letters (a message's TTL expired, a rejection, a delivery limit) lands in the
    dead letters too, with its ``x-death`` header (see ``dead_letter_reason``). A queue an earlier
    kit declared without arguments is declared again with it when empty and unused, else kept as it
    is with a warning (the broker never changes a queue's arguments: 406 PRECONDITION_FAILED); any
    other difference is raised as pika's ChannelClosedByBroker for the caller's broker edge
    (svc._amqp) to report.
    """
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    dlx, dead_letters = dead_letter_exchange(exchange), dead_letter_queue(exchange)
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(dead_letters, durable=True)
    channel.queue_bind(dead_letters, dlx)
    for service in services:
        queue = queue_name(service, exchange)
        try:
            channel.queue_declare(queue, durable=True, arguments={DEAD_LETTER_EXCHANGE_ARG: dlx})
        except pika.exceptions.ChannelClosedByBroker as error:
            if f"inequivalent arg '{DEAD_LETTER_EXCHANGE_ARG}'" not in error.reply_text \
                    or not error.reply_text.endswith("but current is none"):
                raise
            channel = _upgrade(channel.connection.channel(), queue, dlx)
        channel.queue_bind(queue, exchange, routing_key=BINDING_KEY)
    return channel


def _upgrade(channel, queue: str, dlx: str):
    """Give a queue declared without arguments its dead-letter exchange if it is empty and unused;
    the channel to go on with. Raises (ChannelClosedByBroker) if the queue differs in anything else."""
    channel.queue_declare(queue, durable=True)  # no arguments at all, or this raises: never delete those
    try:
        # The broker deletes it only if empty and unused, atomically; a publish in the moment
        # before it is declared again is returned to its publisher (mandatory), not lost.
        channel.queue_delete(queue, if_unused=True, if_empty=True)
        channel.queue_declare(queue, durable=True, arguments={DEAD_LETTER_EXCHANGE_ARG: dlx})
        log.info("queue %s declared again with its dead-letter exchange %s", queue, dlx)
        return channel
    except pika.exceptions.ChannelClosedByBroker:  # 406: not empty, or in use
        channel = channel.connection.channel()
        channel.queue_declare(queue, durable=True)
        log.warning("queue %s has no dead-letter exchange (declared by an earlier kit) and holds messages "
                    "or has consumers: what the broker dead-letters from it (expired, rejected) is dropped; "
                    "once it is empty, delete it (rabbitmqctl delete_queue %s) to have it declared again",
                    queue, queue)
        return channel


def dead_letter_reason(headers: dict | None) -> str:
    """Why a dead letter is one: svc's reason header, or the broker's ``x-death`` (RabbitMQ docs,
    "Dead Letter Exchanges": reason rejected | expired | maxlen | delivery_limit, the queue, a count)
    read into one line; "no reason given" when neither is there."""
    headers = headers or {}
    reason = headers.get(REASON_HEADER)
    if reason:
        return _text(reason)
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        death = deaths[0]  # the most recent first
        why = {"expired": "expired (message TTL)", "rejected": "rejected by a consumer",
               "maxlen": "dropped from a full queue (max-length)", "delivery_limit": "over the delivery limit"}
        kind = _text(death.get("reason", "?"))
        return (f"dead-lettered by the broker: {why.get(kind, kind)} in queue {_text(death.get('queue', '?'))}"
                f" (count {death.get('count', 1)})")
    return "no reason given"


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def delete(channel, exchange: str, services=()) -> None:
    """Remove what ``declare`` made (tests and the kit's reset use it)."""
    for service in services:
        channel.queue_delete(queue_name(service, exchange))
    channel.queue_delete(dead_letter_queue(exchange))
    channel.exchange_delete(dead_letter_exchange(exchange))
    channel.exchange_delete(exchange)
