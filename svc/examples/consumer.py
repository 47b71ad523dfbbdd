"""Bare-bones consumer: print each message of a queue and ack it after the work is done.

    .venv/bin/python svc/examples/consumer.py          # Ctrl-C to stop

Manual ack after the work: if this process dies mid-work, the broker redelivers the message to
the next consumer, so nothing is lost — and, with no deduplication, it may be processed twice.
"""

import logging
import signal

import pika

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = "example1"
PREFETCH = 10

log = logging.getLogger("consumer")


def on_message(channel, method, properties, body) -> None:
    log.info("got %s", body.decode(errors="replace"))  # the "work"
    # Acked only now, after the work. If the connection dropped before this ack, the broker
    # redelivers the message: safe (nothing lost), though the work may happen twice.
    channel.basic_ack(method.delivery_tag)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    channel.basic_qos(prefetch_count=PREFETCH)
    channel.basic_consume(QUEUE, on_message)
    # Ctrl-C (or SIGTERM) asks for a stop, taken between two frames: a KeyboardInterrupt raised in
    # the middle of pika's send made it send an ack twice ("unknown delivery tag", channel closed).
    asked = []
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: asked.append(True))

    def stop_if_asked() -> None:
        if asked:
            channel.stop_consuming()   # after the message in hand is acked; the rest stay queued
        else:
            connection.call_later(0.2, stop_if_asked)

    connection.call_later(0.2, stop_if_asked)
    log.info("consuming %s, Ctrl-C to stop", QUEUE)
    try:
        channel.start_consuming()
    finally:
        connection.close()
        log.info("stopped")


if __name__ == "__main__":
    main()
