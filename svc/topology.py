"""The RabbitMQ topology shared by the consumer, the publisher and the kit, declared idempotently.

Every name derives from the events exchange, so a test can isolate itself with its own exchange.
"""

import logging

import pika

from ._pika import BROKER_ERRORS, NOT_FOUND, closed_by_broker   # svc.amqp's lowest layer (svc.amqp imports this module)


log = logging.getLogger(__name__)

DEFAULT_EXCHANGE = "events"
DEFAULT_SERVICES = ("orders", "notify")
BINDING_KEY = "#"

REASON_HEADER = "x-nirvana-reason"
SERVICE_HEADER = "x-nirvana-service"
ROUTING_KEY_HEADER = "x-nirvana-routing-key"
RAW_PROPERTIES_HEADER = "x-nirvana-raw-properties"  # properties pika could not decode, as sent
DEAD_LETTER_EXCHANGE_ARG = "x-dead-letter-exchange"
QUEUE_TYPES = ("classic", "quorum")
DEFAULT_DELIVERY_LIMIT = 5   # a quorum queue dead-letters a message returned more often than this
# The log: a RabbitMQ stream (RabbitMQ docs "Streams", since 3.9) bound like the service queues, so
# every event published is also kept, in order, after any service has read it. Its retention is
# removed by whole segments (x-stream-max-segment-size-bytes, 500 MB by default), one always kept.
LOG_SUFFIX = "log"
DEFAULT_LOG_MAX_AGE = "7D"            # x-max-age: Y, M, D, h, m or s after a whole number; "" for none
DEFAULT_LOG_MAX_BYTES = 1_000_000_000  # x-max-length-bytes; 0 for none (the log grows until the disk fills)


def queue_name(service: str, exchange: str = DEFAULT_EXCHANGE) -> str:
    """The durable queue of a service: ``events.<service>``."""
    return f"{exchange}.{service}"


def log_name(exchange: str = DEFAULT_EXCHANGE) -> str:
    """The log that keeps every event of ``exchange``: the stream ``<exchange>.log``."""
    return f"{exchange}.{LOG_SUFFIX}"


def log_arguments(max_age: str = DEFAULT_LOG_MAX_AGE, max_bytes: int = DEFAULT_LOG_MAX_BYTES,
                  segment_bytes: int = 0) -> dict:
    """The log's queue arguments: a stream (``x-queue-type``, not settable by policy) with its
    retention, ``max_age`` such as ``"7D"`` (``""``: none) and ``max_bytes`` (0: none), removed by
    whole segments of ``segment_bytes`` (0: the broker's 500 MB).

    The broker never changes a queue's arguments: a log declared with another retention keeps its
    own (``declare`` says so once and goes on); ``./kit reset`` deletes it and declares it again."""
    arguments: dict = {"x-queue-type": "stream"}
    if max_age:
        arguments["x-max-age"] = max_age
    if max_bytes:
        arguments["x-max-length-bytes"] = max_bytes
    if segment_bytes:
        arguments["x-stream-max-segment-size-bytes"] = segment_bytes
    return arguments


def dead_letter_exchange(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dlx"


def dead_letter_queue(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dead-letters"


def queue_arguments(exchange: str = DEFAULT_EXCHANGE, queue_type: str = "classic",
                    delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> dict:
    """The arguments of a service queue; every declarer (svc, its publisher, the kit) uses these, as
    the broker refuses a declaration whose arguments differ (406 inequivalent arg).

    Every queue names the dead-letter exchange. A quorum queue (``queue_type="quorum"``, RabbitMQ
    docs "Quorum Queues") is replicated over the cluster's nodes and counts each return of a
    message (a nack with requeue, a channel or connection closed while it was unacked):
    returned more than ``delivery_limit`` times it is dead-lettered with ``x-death`` reason
    ``delivery_limit`` — an event that crashes its consumer every time stops looping. Its
    dead-lettering is at-least-once (kept until the dead-letter queue confirms it; the broker
    requires ``x-overflow: reject-publish`` for that). Raises ValueError for another queue type.
    """
    arguments = {DEAD_LETTER_EXCHANGE_ARG: dead_letter_exchange(exchange)}
    if queue_type == "quorum":
        arguments.update({"x-queue-type": "quorum", "x-delivery-limit": delivery_limit,
                          "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    elif queue_type != "classic":
        raise ValueError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, not {queue_type!r}")
    return arguments


def dead_letter_queue_arguments(queue_type: str = "classic") -> dict | None:
    """The dead-letter queue's arguments: quorum too on a quorum topology (the dead letters survive
    a node), without a delivery limit (reading letters without an ack returns them; nothing there
    may be dropped for being looked at)."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def declare(channel, exchange: str = DEFAULT_EXCHANGE, services=DEFAULT_SERVICES, *, queue_type: str = "classic",
            delivery_limit: int = DEFAULT_DELIVERY_LIMIT, log_retention: dict | None = None):
    """Declare the exchange, the dead-letter exchange and queue, and each service's bound queue;
    the channel to go on with (a refused declaration closes a channel, see below).

    ``channel`` is a pika BlockingChannel. Declaring what exists with the same arguments is a no-op.
    Each service queue has ``queue_arguments(exchange, queue_type, delivery_limit)``: it names the
    dead-letter exchange, so what the broker itself dead-letters (a message's TTL expired, a
    rejection, a delivery limit) lands in the dead letters too, with its ``x-death`` header (see
    ``dead_letter_reason``). A queue an earlier kit declared without arguments is declared again
    with them when empty and unused, else kept as it is with a warning (the broker never changes a
    queue's arguments: 406 PRECONDITION_FAILED); any other difference (a classic queue where a
    quorum one is declared, another delivery limit) is raised as pika's ChannelClosedByBroker for
    the caller's broker edge (svc.amqp) to report.

    With services (a queue at all), the log ``<exchange>.log`` too (``declare_log``): ``log_retention``
    is its ``log_arguments(...)``, or None to keep the log as it is (declared with the defaults if
    it does not exist yet).
    """
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    dlx, dead_letters = dead_letter_exchange(exchange), dead_letter_queue(exchange)
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(dead_letters, durable=True, arguments=dead_letter_queue_arguments(queue_type))
    channel.queue_bind(dead_letters, dlx)
    arguments = queue_arguments(exchange, queue_type, delivery_limit)
    for service in services:
        queue = queue_name(service, exchange)
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
        except BROKER_ERRORS as error:
            _code, text = closed_by_broker(error) or (0, "")
            if f"inequivalent arg '{DEAD_LETTER_EXCHANGE_ARG}'" not in text \
                    or not text.endswith("but current is none") or queue_type != "classic":
                raise  # a quorum queue is never a classic one upgraded in place: the caller stops
            channel = _upgrade(channel.connection.channel(), queue, arguments)
        channel.queue_bind(queue, exchange, routing_key=BINDING_KEY)
    if services:  # services=(): the exchanges only (an exchange no queue is bound to routes nowhere)
        channel = declare_log(channel, exchange, log_retention)
    return channel


def declare_log(channel, exchange: str = DEFAULT_EXCHANGE, arguments: dict | None = None):
    """Declare the log (a stream) bound to ``exchange`` with ``#``; returns ``channel``, untouched.

    ``arguments`` None: a log that exists is kept as it is (a passive declare on a channel of its
    own), else declared with ``log_arguments()``. The declaration itself goes over a connection of
    its own (the parameters of ``channel``'s): a broker without streams (RabbitMQ before 3.9, or
    its ``stream_queue`` feature flag off) answers it by closing the whole connection (541
    INTERNAL_ERROR "the corresponding feature flag is disabled"). Then the topology stays without
    a log: one error line, and every declarer goes on (events are not kept). A log that exists
    with another retention keeps its own (the broker never changes a queue's arguments): one
    warning, and it is used as it is.
    """
    name = log_name(exchange)
    if arguments is None:
        side = channel.connection.channel()
        try:
            side.queue_declare(name, passive=True)
            side.queue_bind(name, exchange, routing_key=BINDING_KEY)
            return channel
        except BROKER_ERRORS as error:
            if (closed_by_broker(error) or (0,))[0] != NOT_FOUND:
                raise
            arguments = log_arguments()
        finally:
            if side.is_open:
                side.close()
    apart = pika.BlockingConnection(channel.connection._impl.params)  # pika keeps no public accessor
    try:
        side = apart.channel()
        try:
            side.queue_declare(name, durable=True, arguments=arguments)
        except BROKER_ERRORS as error:
            _code, text = closed_by_broker(error) or (0, "")
            if "inequivalent arg" not in text:
                raise
            side = apart.channel()
            log.warning("the log %s exists with other arguments (%s) and keeps its own: RabbitMQ never changes a "
                        "queue's arguments (a queue there that is no stream is refused by SOURCE=log); `./kit "
                        "reset` deletes the log and declares it again", name, text)
        side.queue_bind(name, exchange, routing_key=BINDING_KEY)
    except BROKER_ERRORS as error:
        closed = closed_by_broker(error, connection=True)
        if closed is None:
            raise
        log.error("RabbitMQ refused the log %s (%s): events are not kept for replay; a stream needs "
                  "RabbitMQ 3.9+ with its feature flag on (rabbitmqctl enable_feature_flag stream_queue)",
                  name, closed[1])
    finally:
        if apart.is_open:
            apart.close()
    return channel


def _upgrade(channel, queue: str, arguments: dict):
    """Give a queue declared without arguments its dead-letter exchange (and type) if it is empty
    and unused; the channel to go on with. Raises (ChannelClosedByBroker) if the queue differs in
    anything else."""
    channel.queue_declare(queue, durable=True)  # no arguments at all, or this raises: never delete those
    try:
        # The broker deletes it only if empty and unused, atomically; a publish in the moment
        # before it is declared again is returned to its publisher (mandatory), not lost.
        channel.queue_delete(queue, if_unused=True, if_empty=True)
        channel.queue_declare(queue, durable=True, arguments=arguments)
        log.info("queue %s declared again with its dead-letter exchange %s", queue, arguments[DEAD_LETTER_EXCHANGE_ARG])
        return channel
    except BROKER_ERRORS as error:
        if closed_by_broker(error) is None:
            raise
        # 406: not empty, or in use
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


def dead_letter_service(headers: dict | None, exchange: str = DEFAULT_EXCHANGE) -> str:
    """Whose dead letter it is: svc's service header, or, for one the broker dead-lettered (a
    delivery limit, a TTL), the service of the queue in its latest ``x-death`` (``<exchange>.<service>``;
    another queue's whole name); "?" when neither says."""
    headers = headers or {}
    if headers.get(SERVICE_HEADER):
        return _text(headers[SERVICE_HEADER])
    deaths = headers.get("x-death") or []
    queue = _text(deaths[0].get("queue", "")) if deaths and isinstance(deaths[0], dict) else ""
    return queue.removeprefix(f"{exchange}.") or "?"


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def delete(channel, exchange: str, services=()) -> None:
    """Remove what ``declare`` made (tests and the kit's reset use it)."""
    for service in services:
        channel.queue_delete(queue_name(service, exchange))
    channel.queue_delete(log_name(exchange))
    channel.queue_delete(dead_letter_queue(exchange))
    channel.exchange_delete(dead_letter_exchange(exchange))
    channel.exchange_delete(exchange)
