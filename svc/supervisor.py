"""Reconnection kept apart from consuming, as in pika's examples: a Supervisor runs a fresh Consumer
per connection with a capped backoff that resets once consuming again; ``open_dedup`` waits for
etcd the same way before the first delivery is taken."""

import concurrent.futures
import logging
import threading

from . import amqp
from .config import Config
from .backoff import Backoff
from .consumer import Consumer
from .errors import BrokerUnavailable, DedupUnavailable
from .processor import Processor
from .protocols import Dedup

log = logging.getLogger(__name__)


class Supervisor:
    """Runs a fresh Consumer per connection; reconnects with a capped backoff that resets once a
    consumer is consuming again. BrokerRefused (a refusal no retry cures) ends ``run``."""

    def __init__(self, config: Config, processor: Processor, stop: threading.Event) -> None:
        self.config, self.processor, self.stop = config, processor, stop
        self._backoff = Backoff()   # reset once a consumer consumes again
        self._urls = config.amqp_urls

    def run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="svc-work") as worker:
            while not self.stop.is_set():
                consumer = Consumer(self.config, self.processor, self.stop, on_consuming=self._reset, worker=worker,
                                    urls=self._urls)
                try:
                    consumer.run()
                except BrokerUnavailable as error:
                    self._urls = amqp.lost(self._urls, consumer.url)  # the other nodes are tried first
                    delay = self._backoff.next()
                    log.warning("%s; reconnecting in %.1f s", error, delay)
                    self.stop.wait(delay)

    def _reset(self) -> None:
        self._backoff.reset()


def open_dedup(dedup: Dedup, stop: threading.Event) -> bool:
    """Import the done ids, retrying with backoff while etcd is away; False if stopped first."""
    waits = Backoff()
    while not stop.is_set():
        try:
            dedup.open()
            return True
        except DedupUnavailable as error:
            delay = waits.next()
            log.warning("%s; deduplication waits for etcd (is it running? `./kit up` starts the stack), "
                        "retrying in %.1f s", error, delay)
            stop.wait(delay)
    return False
