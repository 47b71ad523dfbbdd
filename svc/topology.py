"""The RabbitMQ topology shared by the consumer, the publisher and the kit, declared idempotently.

Every name derives from the events exchange, so a test can isolate itself with its own exchange.
"""

DEFAULT_EXCHANGE = "events"
DEFAULT_SERVICES = ("orders", "notify")
BINDING_KEY = "#"

REASON_HEADER = "x-nirvana-reason"
SERVICE_HEADER = "x-nirvana-service"
ROUTING_KEY_HEADER = "x-nirvana-routing-key"


def queue_name(service: str, exchange: str = DEFAULT_EXCHANGE) -> str:
    """The durable queue of a service: ``events.<service>``."""
    return f"{exchange}.{service}"


def dead_letter_exchange(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dlx"


def dead_letter_queue(exchange: str = DEFAULT_EXCHANGE) -> str:
    return f"{exchange}.dead-letters"


def declare(channel, exchange: str = DEFAULT_EXCHANGE, services=DEFAULT_SERVICES) -> None:
    """Declare the exchange, the dead-letter exchange and queue, and each service's bound queue.

    ``channel`` is a pika BlockingChannel. Declaring what exists with the same arguments is a no-op.
    """
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    dlx, dead_letters = dead_letter_exchange(exchange), dead_letter_queue(exchange)
    channel.exchange_declare(dlx, exchange_type="fanout", durable=True)
    channel.queue_declare(dead_letters, durable=True)
    channel.queue_bind(dead_letters, dlx)
    for service in services:
        queue = queue_name(service, exchange)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key=BINDING_KEY)


def delete(channel, exchange: str, services=()) -> None:
    """Remove what ``declare`` made (tests and the kit's reset use it)."""
    for service in services:
        channel.queue_delete(queue_name(service, exchange))
    channel.queue_delete(dead_letter_queue(exchange))
    channel.exchange_delete(dead_letter_exchange(exchange))
    channel.exchange_delete(exchange)
