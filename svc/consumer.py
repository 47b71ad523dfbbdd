"""The RabbitMQ side of the service: one Consumer per connection, a Supervisor that reconnects.

Deliveries are taken in windows of up to PREFETCH messages, processed together (one etcd round
trip per window), then settled (svc/settle.py): dead letters are published with confirms and only
then acked; processed and skipped events are acked after their work is recorded; the rest are
requeued.

pika is used from one thread only (this loop); the work of a window (etcd round trips, WORK_MS)
runs on a worker thread while this loop keeps serving the connection (heartbeats, deliveries),
the pattern of pika's examples/basic_consumer_threaded.py. What a broker error means is decided
in one place, svc.amqp: a refusal no retry cures ends the service (BrokerRefused), a channel
error reopens the channel, a connection error reconnects, a refused dead letter touches only
its own message.
"""

import concurrent.futures
import logging
import os
import threading
import time

import pika

from . import amqp, backoff, collector, requeue, topology
from .amqp import BROKER_ERRORS
from .backoff import Backoff
from .config import Config
from .errors import ChannelClosed, MessageRefused
from .letters import unreadable_encoding
from .outcome import REQUEUE
from .processor import Processor
from .settle import Settler

log = logging.getLogger(__name__)

IDLE_WAIT = 0.2          # seconds to wait for deliveries before checking for a stop
CONNECT_TIMEOUT = 10.0   # seconds for the TCP + AMQP handshake of one connection attempt
BLOCKED_TIMEOUT = 60.0   # seconds a connection may stay blocked (resource alarm) before it is dropped
                         # and opened again (a blocked connection cannot even ack; a new one can)
HELD_SHARE = 10          # a consumer whose held deliveries fill this fraction (1/N) of its prefetch
                         # hands over to a new consumer with a full prefetch (Consumer._consume_again)
HELD_HANDOVER_AFTER = 0.5   # ... and one with fewer, once they have made a prefetch of acks one by one, or
                         # some have waited this long (seconds), unbroken: a held delivery's low tag makes
                         # every later ack on its channel one by one (svc/acks.py); a live sibling's claim
                         # ends sooner (its window's commit), a dead one's after CLAIM_TTL
FILL_WAIT = 0.1          # seconds a hand-over waits for the broker to fill the prefetch
FILL_RETRY = 1.0         # (Consumer._nothing_on_its_way), at most once in this many seconds
HANDOVER_CHANNELS = 16   # channels at most that consume or hold deliveries on one connection: a hand-over
                         # needs a channel of its own while the old one keeps its held deliveries (up to
                         # CLAIM_TTL); unbounded, PREFETCH=1 and 2,100 deliveries claimed by a live sibling
                         # opened 1,821 channels (one per delivery) and ended in NoFreeChannels
PUMP_WAIT = 1.0          # seconds between services of the connection while the worker works
                         # (the worker's end wakes the loop at once: add_callback_threadsafe)


def connection_name(service: str, pid: int | None = None) -> str:
    return f"svc {service} pid {os.getpid() if pid is None else pid}"


class Consumer:
    """Consumes one service's queue over one connection until stopped or disconnected."""

    def __init__(self, config: Config, processor: Processor, stop: threading.Event, on_consuming=None,
                 worker: concurrent.futures.ThreadPoolExecutor | None = None, urls=None) -> None:
        """``urls``: the broker's nodes in the order to try them (default: AMQP_URL's order)."""
        self.config, self.processor, self.stop = config, processor, stop
        self.urls, self.url = tuple(urls or config.amqp_urls), None
        self._user: str | None = None   # AMQP_URL's user of the node connected to (dead letters' user_id)
        self.on_consuming = on_consuming or (lambda: None)
        self.queue = topology.queue_name(config.service, config.exchange)
        self._worker = worker or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="svc-work")
        self.settler = Settler(config, processor.meter, self._sleep)   # ack, dead-letter, hold, keep, requeue
        self.connection = None
        # One broker channel's state (set again by _consume for each channel):
        self.channel = None
        self._tag: str | None = None   # the consumer tag of the current channel's consumer
        self._pending: list = []       # deliveries received, not yet in a window
        self._cancelled = False        # the broker cancelled the consumer
        self._at_bound = False         # HANDOVER_CHANNELS reached (and logged)
        self._fill_after = 0.0         # monotonic time before which no wait for a full prefetch is tried

    def run(self) -> None:
        """Consume until ``stop`` is set (returns) or the connection fails (BrokerUnavailable);
        BrokerRefused when the broker refuses what no retry can cure."""
        connection, self.url = amqp.connect_first(self.urls, CONNECT_TIMEOUT, name=connection_name(self.config.service),
                                                   blocked_timeout=BLOCKED_TIMEOUT)
        self.connection = connection
        self._user = pika.URLParameters(self.url).credentials.username   # what the broker takes as user_id
        try:
            with collector.tuned():   # svc/collector.py: about 3 µs of CPU per event less
                self._run(connection)
        except BROKER_ERRORS as error:  # from the sleep between channels: the connection is gone
            raise amqp.translate(error, f"consuming {self.queue}") from None
        finally:
            amqp.close_quietly(connection)   # unacked deliveries go back to the queue when it closes

    def _run(self, connection) -> None:
        """Consume on channel after channel until stopped; a closed channel is opened again."""
        reopen = Backoff()
        while not self.stop.is_set():
            try:
                if self._consume(connection):
                    self._sleep(backoff.START)  # cancelled by the broker: consume again shortly
                reopen.reset()
            except BROKER_ERRORS as error:
                svc_error = amqp.translate(error, f"consuming {self.queue}")
                if not isinstance(svc_error, (ChannelClosed, MessageRefused)):
                    raise svc_error from None
                # The connection stands: a new channel, the topology declared again. The
                # deliveries of the closed channel are back in the queue (never acked).
                delay = reopen.next()
                log.warning("%s; reopening the channel in %.1f s", svc_error, delay)
                self._sleep(delay)

    # -- one channel ---------------------------------------------------------------------------

    def _consume(self, connection) -> bool:
        """Consume on a new channel until stopped (False) or cancelled by the broker (True); the
        channels are closed on the way out, so what they held unacked returns to the queue."""
        self._pending = []
        # Deliveries a sibling's claim holds wait aside (unacked), never at the head of the queue.
        self.settler.begin(self.processor.held(), self._user)
        self._cancelled = self._at_bound = False
        self.channel = None
        try:
            return self._consume_on(connection)
        finally:
            for channel in {self.channel, self.settler.dead, *self.settler.open.channels()}:
                amqp.close_quietly(channel)  # the connection gone: the broker requeues all the same

    def _consume_on(self, connection) -> bool:
        # Windows of an earlier channel or connection (given up on a broker error) are never
        # settled: their claims go (on the worker, after any of their calls still running there).
        self._call(self.processor.abandon)
        channel = self.channel = connection.channel()
        channel = self.channel = topology.declare(channel, self.config.exchange, services=(self.config.service,),
                                                  queue_type=self.config.queue_type,
                                                  delivery_limit=self.config.delivery_limit)
        self.settler.dead = connection.channel()  # confirmed publishes: dead letters, and copies requeued at the tail
        self.settler.dead.confirm_delivery()
        self._subscribe(channel)
        log.info("%s consuming %s (prefetch %d, dedup %s)", self.config.service, self.queue,
                 self.config.prefetch, "on" if self.processor.dedup.enabled else "off")
        self.on_consuming()
        # Windows of a third of the prefetch: while one window's commit is in flight to etcd, the
        # next is parsed and its claims are sent, and a third is received. Held deliveries (a
        # sibling's claims) keep the prefetch slots of the consumer they came to while they wait;
        # once they fill a tenth of it, a new consumer takes over with a full prefetch.
        in_flight, held = None, self.settler.held
        while not self.stop.is_set() and not self._cancelled:
            self._pending[:0] = held.due()
            if self._holds_too_long(held) and self._may_hand_over() and self._nothing_on_its_way(connection):
                self._consume_again(connection)
            window = max(1, min(self.config.prefetch // 3, (self.config.prefetch - held.held_by(self._tag)) // 2))
            busy = in_flight or self._pending
            connection.process_data_events(time_limit=0 if busy else self._idle_wait())
            while self._pending and len(self._pending) < window:
                before = len(self._pending)
                connection.process_data_events(time_limit=0)
                if len(self._pending) == before:
                    break
            self.settler.retry_kept()
            batch, self._pending = self._pending[:window], self._pending[window:]
            if batch and not in_flight:   # nothing to settle between: one hand-off to the worker, not two
                begun = (batch, self._call(_begin_and_proceed, self.processor, _bodies(batch)))
            else:
                begun = (batch, self._call(self.processor.begin, _bodies(batch))) if batch else None
                if in_flight:
                    self._settle(*in_flight)
                if begun:
                    self._call(begun[1].proceed)
            in_flight = begun
            for drained in self.settler.open.drained(self.channel):
                drained.close()  # an earlier consumer's channel, its held deliveries all settled
        if in_flight:
            self._settle(*in_flight)
        if self._cancelled:
            # The broker cancelled the consumer (its queue deleted, or its node lost): what this
            # channel holds unacked goes back when it closes; a new channel declares the queue again.
            return True
        # Stopping: the current window was finished and settled; what is still buffered (and any
        # kept dead letter) was never acked and returns to the queue when the channel closes.
        self.channel.basic_cancel(self._tag)
        if self.config.queue_type == "quorum":
            # A return would count against the delivery limit: buffered and held ones go as copies
            # (not those svc dead-letters unread: a copy could not carry properties pika did not decode).
            self.settler.requeue([(d, REQUEUE) for d in self._pending + held.due(float("inf"))
                                  if not amqp.undecodable(d[1])])
        self.settler.open.flush()   # done deliveries whose acks wait on old channels (svc/acks.py)
        log.info("%s stopped consuming %s", self.config.service, self.queue)
        return False

    def _subscribe(self, channel) -> None:
        channel.basic_qos(prefetch_count=self.config.prefetch)
        channel.add_on_cancel_callback(self._on_cancel)
        self._tag = channel.basic_consume(self.queue, self._on_message)
        self.settler.open.consuming(self._tag, channel)

    def _consume_again(self, connection) -> None:
        """A new consumer on a new channel, the current one cancelled: the deliveries held by the old
        one (unacked, its channel's to ack or requeue when they come due) no longer take prefetch
        slots (counted per consumer), nor rule out an ack "multiple" of the new channel's windows
        (svc/acks.py). pika rejects (requeues) what reaches it for the old consumer during the
        cancel (it never reached _on_message), so the loop does this once nothing can reach it, or
        on a classic queue once it has waited for that (``_nothing_on_its_way``)."""
        held = self.settler.held.held_by(self._tag)
        self.channel.basic_cancel(self._tag)
        self.channel = connection.channel()
        self._subscribe(self.channel)
        log.info("%s: %d deliveries held for siblings' claims; consuming again on a new channel",
                 self.config.service, held)

    def _holds_too_long(self, held) -> bool:
        """Whether the current consumer's held deliveries call for a hand-over: they fill a tenth
        of its prefetch (HELD_SHARE), or their low tags have made a whole prefetch of acks one by one
        on its channel (a fast consumer may drain its queue within the wait), or some have waited
        HELD_HANDOVER_AFTER seconds (a few held for a dead sibling's claims would make every ack on
        this channel one by one until CLAIM_TTL)."""
        count = held.held_by(self._tag)
        if not count:
            return False
        if count >= max(1, self.config.prefetch // HELD_SHARE) \
                or self.settler.open.acked_one_by_one(self.channel) >= self.config.prefetch:
            return True
        since = held.waiting_since(self._tag)
        return since is not None and time.monotonic() - since >= HELD_HANDOVER_AFTER

    def _nothing_on_its_way(self, connection=None) -> bool:
        """Whether the consumer may be cancelled now: only while the deliveries open on its channel
        fill its prefetch is none of them on its way. pika rejects (returns to the queue) what
        reaches a cancelled consumer; on a quorum queue each return counts against the delivery
        limit, and on either kind a held delivery returned comes to the new consumer, is held there
        again and calls for a second hand-over (a run of held deliveries split in two, each half
        acking a prefetch one by one: a CI run at load 10 split 10 held 9 + 1). The broker sends a
        consumer no more than its prefetch unacked, so with the prefetch full every delivery it
        sent has been received (none in flight, none in pika's buffer), every ack sent has been
        taken, and it sends none until the next ack, which comes after the cancel. A busy consumer
        has just acked a window when it asks, so with ``connection`` it waits up to FILL_WAIT for
        the broker to fill the prefetch (at most once per FILL_RETRY seconds: a queue with fewer
        messages than that never fills it); its deliveries go to the pending ones as in the loop.
        Unfilled after that wait, a classic queue's consumer hands over all the same (a return
        costs it no delivery count), a quorum queue's does not yet."""
        open_, channel, prefetch = self.settler.open, self.channel, self.config.prefetch
        if open_.count(channel) >= prefetch:
            return True
        filled = False
        if connection is not None and time.monotonic() >= self._fill_after:
            self._fill_after = time.monotonic() + FILL_RETRY
            filled = amqp.pump_until(connection, lambda: open_.count(channel) >= prefetch, FILL_WAIT, step=0.01)
        return filled or self.config.queue_type != "quorum"

    def _may_hand_over(self) -> bool:
        """Whether a new channel may take over: fewer than HANDOVER_CHANNELS consume or hold
        deliveries. At the bound the consumer goes on with the prefetch slots its held deliveries
        leave (none, with PREFETCH=1) until one of them comes due (its claim released or its wait
        over) and an older channel drains and closes; logged once each time the bound is reached."""
        if len(self.settler.open.channels()) < HANDOVER_CHANNELS:
            self._at_bound = False
            return True
        if not self._at_bound:
            self._at_bound = True
            log.info("%s: %d deliveries held for siblings' claims on %d channels, the most one connection opens for "
                     "them; consuming on with what the held ones leave of the prefetch", self.config.service,
                     len(self.settler.held), HANDOVER_CHANNELS)
        return False

    def _on_message(self, channel, method, properties, body) -> None:
        self.settler.open.add(method)
        reason = self.config.queue_type == "quorum" and requeue.over_limit(properties, self.config.delivery_limit)
        reason = reason or unreadable_encoding(properties)
        if reason:  # dead-lettered unprocessed: its crashes add up past the limit, or svc cannot read its body
            amqp.refuse(properties, reason)
        self._pending.append((method, properties, body))

    def _on_cancel(self, frame) -> None:
        log.warning("%s: the consumer of %s was cancelled by the broker (queue deleted?); declaring the "
                    "topology again", self.config.service, self.queue)
        self._cancelled = True

    def _idle_wait(self) -> float:
        due = self.settler.next_due()   # a kept dead letter to publish again
        return IDLE_WAIT if due is None else max(0.0, min(IDLE_WAIT, due - time.monotonic()))

    def _call(self, function, *args):
        """``function(*args)`` on the worker thread; meanwhile this thread serves the connection, so
        heartbeats flow and deliveries arrive during work and etcd waits. The worker never touches
        pika; this thread only waits for it, so the processor sees one call at a time."""
        future = self._worker.submit(function, *args)
        future.add_done_callback(self._wake)
        while not future.done():
            self.connection.process_data_events(time_limit=PUMP_WAIT)
        return future.result()

    def _wake(self, future) -> None:
        try:
            self.connection.add_callback_threadsafe(lambda: None)
        except BROKER_ERRORS:
            pass  # the connection is closing: the loop notices on its own

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` serving the connection, returning early on stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.connection.sleep(min(IDLE_WAIT, max(0.0, deadline - time.monotonic())))

    def _settle(self, batch, window) -> None:
        """Settle a window's deliveries once its commit is done (svc/settle.py)."""
        self.settler.settle(batch, window, self._call(window.finish))


def _begin_and_proceed(processor, bodies: list[bytes]):
    """``processor.begin(bodies)`` and its ``proceed()``, in one call (on the worker thread)."""
    window = processor.begin(bodies)
    window.proceed()
    return window


def _bodies(batch) -> list[bytes]:
    """The bodies the processor parses: not those whose properties could not be decoded."""
    return [body for _, properties, body in batch if not amqp.undecodable(properties)]

