"""Read the events back from the log (``SOURCE=log``): a stream-reading loop with a tracking record.

The log ``<exchange>.log`` is a RabbitMQ stream (svc/topology.py). Over AMQP 0.9.1 a stream keeps
no position for its readers, has no dead-lettering and refuses nacks; so this loop keeps its own
position, the *tracking record* (the offset of the last event applied), and writes it in the same
etcd transaction as the window's effects, done record and read model (svc/projection.py), guarded
by "the tracking record is still what this reader last wrote". A reader killed between any two
steps starts again from the record plus one: what it had applied is exactly what the record says,
nothing applied twice, nothing skipped. Each window, in order:

1. read: deliveries in offset order (each carries its ``x-stream-offset`` header), as many as fit
   one etcd transaction of TXN_OPS operations;
2. every event applied to the state in memory: dedup by id (a copy of an id applied earlier is
   skipped, the same id with another payload is a conflict), effects, the view; while the
   previous windows' commits are still in flight, on top of what they write (svc/window.py);
3. what cannot be applied (a body that is no event, a conflict) is dead-lettered with its reason
   and offset (published with confirms to the dead-letter exchange: the stream itself has no
   dead-lettering) and counted (``{service}_event_invalid``, ``{service}_<type>_conflict``);
4. commit: one etcd transaction, the effects and the tracking record together, guarded by the
   record the previous commit wrote; sent while at most IN_FLIGHT - 1 others await their answer
   (one that reached etcd before its predecessor fails its guard, writes nothing, and is sent again);
5. ack, once its commit is answered (acks on a stream delete nothing: they are credit for the
   next deliveries).

A window's dead letters are published before its commit: killed in between, the window is read
again and its dead letters published again (at least once, never lost). A commit etcd does not
answer may have been applied: the state is read again from etcd and reading starts again from
the tracking record, whatever happened.

Crash points (``CRASH_AT``, svc/faults.py): ``read`` after a window is read and applied in memory,
``done`` after its commit (before the ack), ``acked`` after its ack.
"""

import collections
import logging
import os
import threading

import pika

from . import amqp, collector, etcd as _etcd, metrics, projection, topology
from .amqp import BROKER_ERRORS
from .backoff import Backoff
from .config import Config
from .errors import BrokerRefused, BrokerUnavailable, ChannelClosed, DedupUnavailable, MessageRefused
from .faults import crash
from .stream import OFFSET_HEADER, offset_argument
from .window import State, Window

log = logging.getLogger(__name__)

TXN_OPS = 1000           # events per window, and operations per commit at most (with dedup, the
                         # window's done record, which is its effect record too, and the view keys it
                         # changed; without, an effect record per event; + the tracking record): the kit's
                         # etcd allows 1024 (--max-txn-ops); halved while etcd refuses a transaction as
                         # too large (its default is 128)
IN_FLIGHT = 2            # commits sent to etcd and not yet answered, at most (etcd writes them
                         # to its log together; each guarded by the tracking record of the one before)
IDLE_WAIT = 0.2          # seconds to wait for deliveries before checking for a stop
CONNECT_TIMEOUT = 10.0
LOG_OFFSET_HEADER = "x-nirvana-log-offset"   # on a dead letter: where in the log its event is

# Where the tracking record is written: "txn" (with the effects, in one transaction: the design).
# "before" (its own put when a window is read) and "after" (its own put after the ack) exist only
# so a test can show what goes wrong when the position is written apart from the effects.
TRACKING = "txn"


class Restart(Exception):
    """The state in memory may differ from etcd's: read it again and read the log from the record."""


class LogReader:
    """Reads ``<exchange>.log`` for ``config.service`` into version ``version`` of its read model,
    until ``stop`` is set. Raises BrokerRefused when the broker refuses what no retry cures."""

    def __init__(self, config: Config, etcd: _etcd.Etcd, meter, stop: threading.Event) -> None:
        self.config, self.etcd, self.meter, self.stop = config, etcd, meter, stop
        self.log_name = topology.log_name(config.exchange)
        self.max_ops = TXN_OPS
        self.crash_at = config.crash_at
        self.connection = None

    def run(self) -> None:
        """Read until ``stop`` is set. Meanwhile the objects made so far (modules, settings) are
        left out of the cyclic garbage collector's passes and it runs every collector.GC_THRESHOLD[0]
        allocations instead of 700 (svc/collector.py): deliveries waiting for their window outlive
        a few passes, and each full pass walked every module's objects again (50,000 events read
        in 1.75-1.85 s of CPU instead of 2.4-2.75; 0.02 s in the collector instead of 0.35-0.39)."""
        waits = Backoff()
        with collector.tuned():
            while not self.stop.is_set():
                try:
                    state = self._open()
                    self._read(state)
                    waits.reset()
                except (DedupUnavailable, BrokerUnavailable, ChannelClosed, MessageRefused, Restart) as error:
                    delay = waits.next()
                    log.warning("%s; reading the log again from the tracking record in %.1f s", error, delay)
                    self.stop.wait(delay)
                finally:
                    self._close()

    # -- start ------------------------------------------------------------------------------

    def version(self) -> int:
        """The version this reader builds: VIEW_VERSION, else the one in use, else 1 (made the one in
        use when there is none, in one create-if-absent transaction)."""
        config = self.config
        if config.view_version:
            return config.view_version
        current = projection.current_key(config.etcd_prefix, config.service).encode()
        request = _etcd.new_txn()
        _etcd.add_absent(request.compare, current)
        _etcd.add_put(request.success, current, b"1")
        _etcd.add_get(request.failure, current)
        reply = self.etcd.txn(request)
        return 1 if reply.succeeded else int(reply.responses[0].response_range.kvs[0].value)

    def _open(self) -> State:
        config = self.config
        version = self.version()
        state = State(self.etcd, config.etcd_prefix, config.service, version, config.enable_etcd)
        start = offset_argument(config.log_offset) if state.position is None else state.position + 1
        self.connection, _url = amqp.connect_first(config.amqp_urls, CONNECT_TIMEOUT,
                                                    name=f"svc {config.service} log pid {os.getpid()}")
        try:
            channel = topology.declare(self.connection.channel(), config.exchange, services=(), queue_type=config.queue_type,
                                       delivery_limit=config.delivery_limit)
            channel = topology.declare_log(channel, config.exchange, config.log_retention)
            self.dead = self.connection.channel()
            self.dead.confirm_delivery()
            # Credit per consumer (a stream refuses global QoS): acks come after a window's commit, so
            # the windows in flight keep their credit while the next is read; PREFETCH at least
            # IN_FLIGHT + 2 windows.
            channel.basic_qos(prefetch_count=max(config.prefetch, (IN_FLIGHT + 2) * TXN_OPS))
            self.pending: list = []
            channel.basic_consume(self.log_name, self._on_message, arguments={OFFSET_HEADER: start})
        except BROKER_ERRORS as error:
            _code, text = amqp.closed_by_broker(error) or (0, "")
            if "'x-stream-offset'" in text:   # 406 invalid arg: a queue of another type
                raise BrokerRefused(f"{self.log_name} is not a stream ({text}): SOURCE=log needs the "
                                    "log svc's topology declares; delete that queue") from None
            # declared just above: a log still missing is one the broker refused (no retry cures it)
            raise amqp.translate(error, f"reading the log {self.log_name}", may_declare=False) from None
        self.channel = channel
        log.info("%s reading the log %s into version %d from %s (tracking record: %s; %d done ids, %d view keys)",
                 config.service, self.log_name, version, start, "none" if state.position is None else state.position,
                 len(state.done), len(state.view))
        return state

    def _on_message(self, channel, method, properties, body) -> None:
        self.pending.append((method, properties, body))

    def _close(self) -> None:
        # Closing a stream consumer makes pika reject what it has buffered, which a stream refuses
        # (540 NOT_IMPLEMENTED) by closing the connection: harmless, as the connection is closing.
        if self.connection is not None and self.connection.is_open:
            try:
                self.connection.close()
            except BROKER_ERRORS:
                pass
        self.connection = None

    # -- the loop ---------------------------------------------------------------------------

    def _read(self, state: State) -> None:
        """Windows one after the other; while the commits of up to IN_FLIGHT windows are in flight to
        etcd, the next is read and applied in memory on top of them (the state follows each commit
        as sent: a commit that fails raises Restart, and the state is read again from etcd). Each
        commit is guarded by the tracking record the one before it wrote, so etcd applies them in
        the order sent or not at all (one evaluated too early is sent again once its predecessor
        is answered); they are waited for and acked in that order."""
        in_flight: collections.deque = collections.deque()
        try:
            while not self.stop.is_set():
                busy = self.pending or in_flight
                self.connection.process_data_events(time_limit=0 if busy else IDLE_WAIT)
                while self.pending and len(self.pending) < self.max_ops:
                    before = len(self.pending)
                    self.connection.process_data_events(time_limit=0)
                    if len(self.pending) == before:
                        break
                window = self._next_window(state) if self.pending else None
                if window is None:
                    while in_flight:   # nothing new to read: the commits sent are waited for
                        self._settle(*in_flight.popleft())
                    continue
                if len(in_flight) == IN_FLIGHT:
                    self._settle(*in_flight.popleft())
                in_flight.append((window, self._commit(window)))
            while in_flight:
                self._settle(*in_flight.popleft())
        except BROKER_ERRORS as error:
            raise amqp.translate(error, f"reading the log {self.log_name}") from None

    def _next_window(self, state: State) -> "Window | None":
        """Read and apply the next window from the head of the pending deliveries; None if they
        were all covered by the tracking record already (a numeric start may deliver from the start
        of its chunk: those are acked only)."""
        batch, self.pending = self.pending[:self.max_ops], self.pending[self.max_ops:]
        old = 0
        while old < len(batch) and state.position is not None and int(batch[old][1].headers[OFFSET_HEADER]) <= state.position:
            old += 1
        if old:
            self.channel.basic_ack(batch[old - 1][0].delivery_tag, multiple=True)
            self.pending[:0] = batch[old:]
            return None
        window = Window(state, batch, self.max_ops)
        self.pending[:0] = batch[window.taken:]   # what did not fit this window's transaction
        if TRACKING == "before":
            self.etcd.put(state.tracking, str(window.offsets[-1]).encode())
        self._crash("read")
        for i, reason, _kind in window.dead:
            self._dead_letter(window.deliveries[i], reason, window.offsets[i])
        return window

    def _commit(self, window: Window):
        """Send the window's commit (not waited for) and move the state in memory to what it writes."""
        window.request = window.transaction(position=TRACKING == "txn")   # kept: sent again in _settle
        try:
            pending = self.etcd.txn_async(window.request)
        except DedupUnavailable as error:
            raise Restart(f"the commit of offsets {window.offsets[0]}..{window.offsets[-1]} was not sent "
                          f"({error})") from None
        window.committed()
        return pending

    def _settle(self, window: Window, pending) -> None:
        """Wait for the window's commit, then ack its deliveries (credit for the next ones)."""
        try:
            reply = pending.result()
            if not reply.succeeded:
                # Commits in flight may reach etcd's apply loop in either order: one evaluated before
                # its predecessor failed its guard and wrote nothing. The predecessor is applied now
                # (settled in order): the same commit again; refused again, the record moved.
                reply = self.etcd.txn(window.request)
        except _etcd.TxnTooLarge as error:
            if self.max_ops <= 8:
                raise Restart(f"etcd refuses even one event in a transaction ({error}): raise its --max-txn-ops") \
                    from None
            self.max_ops //= 2
            raise Restart(f"etcd refused a window as too large ({error}); from now on {self.max_ops} "
                          "operations per window") from None
        except DedupUnavailable as error:
            raise Restart(f"the commit of offsets {window.offsets[0]}..{window.offsets[-1]} is not answered "
                          f"({error}): it may have been applied") from None
        if not reply.succeeded:
            raise Restart(f"the tracking record of version {window.state.version} moved under this reader "
                          "(another reader of the same version?)")
        self._crash("done")
        self.channel.basic_ack(window.deliveries[-1][0].delivery_tag, multiple=True)
        self._count(window)
        self._crash("acked")
        if TRACKING == "after":
            self.etcd.put(window.state.tracking, str(window.offsets[-1]).encode())

    def _dead_letter(self, delivery, reason: str, offset: int) -> None:
        """Publish a dead letter with its reason and offset and wait for the confirm (a stream has no
        dead-lettering of its own); Restart if the broker refuses it (the window is read again)."""
        method, properties, body = delivery
        headers = {key: value for key, value in (properties.headers or {}).items() if key != OFFSET_HEADER}
        headers.update({topology.REASON_HEADER: reason, topology.SERVICE_HEADER: self.config.service,
                        topology.ROUTING_KEY_HEADER: method.routing_key, LOG_OFFSET_HEADER: offset})
        try:
            self.dead.basic_publish(topology.dead_letter_exchange(self.config.exchange), method.routing_key, body,
                                    pika.BasicProperties(headers=headers, delivery_mode=2,
                                                         content_type=properties.content_type), mandatory=True)
        except BROKER_ERRORS as error:
            if amqp.classify(error) is not amqp.Action.MESSAGE:   # a nack, or returned: only this letter
                raise
            raise Restart(f"dead letter of offset {offset} refused by RabbitMQ ({type(error).__name__})") from None
        log.warning("%s: offset %d of the log dead-lettered: %s", self.config.service, offset, reason)

    def _count(self, window: Window) -> None:
        service, meter = self.config.service, self.meter
        for counted, name in ((window.applied, metrics.ok), (window.skipped, metrics.skipped)):
            for event_type, count in collections.Counter(event.type for event in counted).items():
                meter.incr(name(service, event_type), count)
        for _i, _reason, kind in window.dead:
            meter.incr(metrics.invalid(service) if kind == "invalid" else metrics.conflict(service, kind))
        meter.flush()

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            crash(self.meter.flush)
