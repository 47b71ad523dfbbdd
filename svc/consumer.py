"""The RabbitMQ side of the service: one Consumer per connection, a Supervisor that reconnects.

Deliveries are taken in windows of up to PREFETCH messages, processed together (one etcd round
trip per window), then settled: dead letters are published with confirms and only then acked;
processed and skipped events are acked after their work is recorded; the rest are requeued.
"""

import logging
import os
import threading
import time

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from . import topology
from .config import Config, mask_url
from .errors import BrokerUnavailable, DedupUnavailable
from .processor import Processor

log = logging.getLogger(__name__)

IDLE_WAIT = 0.2          # seconds to wait for deliveries before checking for a stop
HELD_DELAY = 0.3         # seconds before requeueing an event a live sibling holds
BACKOFF_START = 0.2      # seconds; doubled up to BACKOFF_MAX while etcd or RabbitMQ is away
BACKOFF_MAX = 5.0

# A broker that takes the TCP connection but never answers ends in a handshake timeout, an
# AMQPConnectorException (not an AMQPError): retried like any other broker failure.
BROKER_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


def connection_name(service: str, pid: int | None = None) -> str:
    return f"svc {service} pid {os.getpid() if pid is None else pid}"


class Consumer:
    """Consumes one service's queue over one connection until stopped or disconnected."""

    def __init__(self, config: Config, processor: Processor, stop: threading.Event, on_consuming=None) -> None:
        self.config, self.processor, self.stop = config, processor, stop
        self.on_consuming = on_consuming or (lambda: None)
        self.queue = topology.queue_name(config.service, config.exchange)
        self._pending: list = []
        self._etcd_backoff = BACKOFF_START

    def run(self) -> None:
        """Consume until ``stop`` is set (returns) or the connection fails (BrokerUnavailable)."""
        parameters = pika.URLParameters(self.config.amqp_url)
        # A name per process, so an operator (or a test) can find and close this very connection.
        parameters.client_properties = {"connection_name": connection_name(self.config.service)}
        try:
            connection = pika.BlockingConnection(parameters)
        except BROKER_ERRORS as error:
            raise BrokerUnavailable(f"cannot connect to {mask_url(self.config.amqp_url)}: {error!r} "
                                    "(is RabbitMQ running? `./kit up` starts the stack)") from None
        try:
            self._consume(connection)
        except BROKER_ERRORS as error:
            raise BrokerUnavailable(f"connection to RabbitMQ lost: {error!r}") from None
        finally:
            if connection.is_open:
                try:
                    # Unacked deliveries go back to the queue when the connection closes.
                    connection.close()
                except BROKER_ERRORS:
                    pass

    def _consume(self, connection) -> None:
        channel = connection.channel()
        topology.declare(channel, self.config.exchange, services=(self.config.service,))
        channel.basic_qos(prefetch_count=self.config.prefetch)
        self._dead = connection.channel()
        self._dead.confirm_delivery()
        tag = channel.basic_consume(self.queue, self._on_message)
        log.info("%s consuming %s (prefetch %d, dedup %s)", self.config.service, self.queue,
                 self.config.prefetch, "on" if self.processor.dedup.enabled else "off")
        self.on_consuming()
        self.connection, self.channel = connection, channel
        # Two windows of half the prefetch each: while one window's commit is in flight to etcd,
        # the next is received and parsed and its claims are sent.
        window = max(1, self.config.prefetch // 2)
        in_flight = None
        while not self.stop.is_set():
            connection.process_data_events(time_limit=0 if in_flight or self._pending else IDLE_WAIT)
            while self._pending and len(self._pending) < window:
                before = len(self._pending)
                connection.process_data_events(time_limit=0)
                if len(self._pending) == before:
                    break
            batch, self._pending = self._pending[:window], self._pending[window:]
            begun = (batch, self.processor.begin([body for _, _, body in batch])) if batch else None
            if in_flight:
                self._settle(*in_flight)
            if begun:
                begun[1].proceed()
            in_flight = begun
        if in_flight:
            self._settle(*in_flight)
        # Stopping: the current window was finished and settled; what is still buffered was
        # never worked on and returns to the queue when the channel closes.
        channel.basic_cancel(tag)
        log.info("%s stopped consuming %s", self.config.service, self.queue)

    def _on_message(self, channel, method, properties, body) -> None:
        self._pending.append((method, properties, body))

    def _settle(self, batch, window) -> None:
        outcomes = window.finish()
        for (method, properties, body), outcome in zip(batch, outcomes):
            if outcome.action == "dead":
                self._dead_letter(method, properties, body, outcome.reason)
        acks = [method.delivery_tag for (method, _, _), o in zip(batch, outcomes) if o.action != "requeue"]
        requeues = [(method.delivery_tag, o) for (method, _, _), o in zip(batch, outcomes) if o.action == "requeue"]
        # An ack that fails because the connection dropped is safe: the broker redelivers, and
        # the done mark (with dedup) turns the redelivery into a skip.
        if len(acks) == len(batch):
            self.channel.basic_ack(acks[-1], multiple=True)
        else:
            for delivery_tag in acks:
                self.channel.basic_ack(delivery_tag)
        if log.isEnabledFor(logging.DEBUG):
            for i, outcome in enumerate(outcomes):
                event = window.events.get(i)
                what = f"event {event.id[:64]!r}" if event else f"body {i} of the window (not an event)"
                log.debug("%s: %s", what, {"ack": "acked", "dead": "dead-lettered, acked",
                                           "requeue": "requeued (not acked)"}[outcome.action])
        if requeues:
            self._requeue(requeues)

    def _dead_letter(self, method, properties, body, reason: str) -> None:
        """Publish to the dead-letter exchange and wait for the broker's confirm; the caller acks
        the original only after this returns, so a failed publish loses nothing."""
        headers = dict(properties.headers or {})
        headers.update({topology.REASON_HEADER: reason, topology.SERVICE_HEADER: self.config.service,
                        topology.ROUTING_KEY_HEADER: method.routing_key})
        self._dead.basic_publish(topology.dead_letter_exchange(self.config.exchange), method.routing_key, body,
                                 pika.BasicProperties(headers=headers, delivery_mode=2,
                                                      content_type=properties.content_type),
                                 mandatory=True)
        log.debug("dead-lettered %d bytes: %s", len(body), reason)

    def _requeue(self, requeues) -> None:
        if any(outcome.backoff for _, outcome in requeues):
            delay, self._etcd_backoff = self._etcd_backoff, min(self._etcd_backoff * 2, BACKOFF_MAX)
            log.warning("etcd unavailable: %d events requeued after %.1f s", len(requeues), delay)
        else:
            delay, self._etcd_backoff = HELD_DELAY, BACKOFF_START
        deadline = time.monotonic() + delay
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.connection.sleep(min(IDLE_WAIT, max(0.0, deadline - time.monotonic())))
        for delivery_tag, _ in requeues:
            # Not done, not acked: back to the queue for another try (fail closed).
            self.channel.basic_nack(delivery_tag, requeue=True)


class Supervisor:
    """Runs a fresh Consumer per connection; reconnects with a capped backoff that resets once a
    consumer is consuming again."""

    def __init__(self, config: Config, processor: Processor, stop: threading.Event) -> None:
        self.config, self.processor, self.stop = config, processor, stop
        self._backoff = BACKOFF_START

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                Consumer(self.config, self.processor, self.stop, on_consuming=self._reset).run()
            except BrokerUnavailable as error:
                log.warning("%s; reconnecting in %.1f s", error, self._backoff)
                self.stop.wait(self._backoff)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _reset(self) -> None:
        self._backoff = BACKOFF_START


def open_dedup(dedup, stop: threading.Event) -> bool:
    """Import the done ids, retrying with backoff while etcd is away; False if stopped first."""
    delay = BACKOFF_START
    while not stop.is_set():
        try:
            dedup.open()
            return True
        except DedupUnavailable as error:
            log.warning("%s; deduplication waits for etcd (is it running? `./kit up` starts the stack), "
                        "retrying in %.1f s", error, delay)
            stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)
    return False
