"""Bare-bones producer: publish one event to a queue and wait for the broker's confirm.

    .venv/bin/python svc/examples/producer.py '{"type":"new_order","id":"123"}'

No exchange topology, no deduplication, no metrics: only what it takes to hand one message to
RabbitMQ and know that it took it (publisher confirm) and could route it (mandatory flag).
"""

import logging
import sys

import pika
import pika.exceptions

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = "example1"
BODY = '{"type":"new_order","id":"123"}'

log = logging.getLogger("producer")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    body = sys.argv[1] if len(sys.argv) > 1 else BODY
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True)  # idempotent: the consumer declares it too
        channel.confirm_delivery()
        # The default exchange routes by queue name; with confirms this call returns only once
        # the broker has the message, and raises if it could not route it.
        channel.basic_publish("", QUEUE, body.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
        log.info("published to %s: %s", QUEUE, body)
        return 0
    except pika.exceptions.UnroutableError:
        log.error("the broker could not route the message to %s", QUEUE)
        return 1
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
