"""Publish events with publisher confirms and the mandatory flag (the CLI is svc.publish).

Confirms are pipelined: every event is sent, then the broker's (multiple) acks are awaited, so
bulk publishing costs one round trip per batch, not per event. An event no queue is bound for
comes back (mandatory) and is reported as unroutable.
"""

import dataclasses
import json
import os
import time

import pika

from . import amqp, topology
from .config import DEFAULT_AMQP_URL, mask_url, split_urls
from .errors import BrokerRefused, BrokerUnavailable, PublishError, PublishRefused

DEFAULT_ROUTING_KEY = "foo"
SHORTSTR_MAX = 255                # bytes of an AMQP 0-9-1 short string: exchange names, routing keys (spec 4.2.5.3)
MAX_BODY = 512 * 1024 * 1024      # bytes: RabbitMQ's ceiling for max_message_size ("larger than max size", rabbit_channel)
RESERVED_PREFIX = "amq."          # exchange names the broker keeps for itself (declaring one: 403 ACCESS_REFUSED)
DEFAULT_TIMEOUT = 30.0  # seconds for one publish() to be confirmed
CLOSE_GRACE = 1.0       # seconds a timed-out publish waits for the broker to close, then gives up


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What the broker said about one ``publish()``: confirmed + nacked = events sent."""

    confirmed: int
    unroutable: int
    nacked: int
    ids: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.unroutable == 0 and self.nacked == 0 and self.confirmed == len(self.ids)


class Publisher:
    """Publishes events to an exchange; declares the topology (idempotently) first.

    ``services`` are the queues declared and bound before the first publish, so no event is lost
    to a queue that does not exist yet; pass ``()`` to declare only the exchanges. ``queue_type``
    and ``delivery_limit`` are the services' (QUEUE_TYPE, DELIVERY_LIMIT): the broker refuses a
    queue declared with other arguments than it has. ``amqp_url`` may name several nodes of one
    cluster, comma-separated: the first that answers is used.
    """

    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, exchange: str = topology.DEFAULT_EXCHANGE, *,
                 services=topology.DEFAULT_SERVICES, declare: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 queue_type: str = "classic", delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT) -> None:
        self.amqp_url, self.exchange, self.services = amqp_url, exchange, tuple(services)
        self.timeout, self.queue_type, self.delivery_limit = timeout, queue_type, delivery_limit
        self._declared = not declare

    def __enter__(self) -> "Publisher":
        self._declare(self.timeout)
        return self

    def __exit__(self, *exc) -> None:
        """Each publish() closes its own connection; nothing is left open."""

    def _declare(self, timeout: float) -> None:
        if self._declared:
            return
        check_publish(self.exchange, "", declare=True)   # a reserved name is refused before connecting
        connection = amqp.connect(self.amqp_url, timeout)  # BrokerRefused / BrokerUnavailable, one line
        try:
            topology.declare(connection.channel(), self.exchange, services=self.services, queue_type=self.queue_type,
                             delivery_limit=self.delivery_limit)
        except amqp.BROKER_ERRORS as error:
            raise amqp.translate(error, "declaring the topology", url=self.amqp_url) from None
        finally:
            if connection.is_open:
                connection.close()
        self._declared = True

    def publish(self, event, routing_key: str = DEFAULT_ROUTING_KEY, count: int = 1,
                fresh_ids: bool = False) -> PublishResult:
        """Publish ``event`` ``count`` times (the same id: duplicates, unless ``fresh_ids``).

        ``event`` is a dict (sent as JSON) or bytes/str sent as they are (to show bad input).
        Returns or raises within ``timeout`` (+ CLOSE_GRACE), whatever the broker does:
        BrokerRefused for what no retry cures (the exchange has another type or, with
        ``declare=False``, does not exist; a wrong login or vhost; a missing permission), and its
        PublishRefused when the publish itself is refused, naming why (checked before sending:
        ``check_publish``; else the broker's answer: a body over its max_message_size...),
        BrokerUnavailable when the broker cannot be reached, PublishError when not all were confirmed.
        """
        deadline = time.monotonic() + self.timeout
        if not isinstance(event, (dict, str, bytes, bytearray)):
            raise TypeError(f"event must be a dict, str or bytes, not {type(event).__name__}")
        if count < 0:
            raise ValueError("count must be 0 or more")
        if fresh_ids and not isinstance(event, dict):
            raise ValueError("fresh_ids needs the event as a dict")
        check_publish(self.exchange, routing_key, declare=not self._declared)
        self._declare(self.timeout)
        if fresh_ids:
            ids = _fresh_ids(event.get("id", "e"), count)
            bodies = _with_ids(event, ids)
        elif isinstance(event, dict):
            bodies, ids = [json.dumps(event).encode()] * count, [str(event.get("id"))] * count
        else:
            bodies, ids = [event.encode() if isinstance(event, str) else bytes(event)] * count, [""] * count
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(f"declaring the topology at {mask_url(self.amqp_url)} took the whole "
                                    f"{self.timeout:g} s; nothing was published")
        return ConfirmedBatch(self.amqp_url, self.exchange, routing_key, bodies, ids, remaining).run()


def check_publish(exchange: str, routing_key: str, bodies=(), *, declare: bool = False) -> None:
    """Refuse, before anything is sent, what the broker would refuse: raises PublishRefused naming
    the rule when the exchange name or the routing key is over 255 bytes in UTF-8 (AMQP 0-9-1
    short strings: pika cannot even encode one), a body is over 512 MiB (RabbitMQ's highest
    max_message_size; a lower one configured on the node is read from its answer), or, when the
    exchange is to be declared (``declare``), its name starts with the reserved ``amq.``
    (RabbitMQ: "exchange name ... contains reserved prefix 'amq.*'", 403 ACCESS_REFUSED)."""
    for what, name in (("exchange name", exchange), ("routing key", routing_key)):
        size = len(name.encode("utf-8"))
        if size > SHORTSTR_MAX:
            raise PublishRefused(f"the {what} {name[:40]!r}... is {size} bytes in UTF-8, over AMQP's "
                                 f"{SHORTSTR_MAX} bytes for it (a short string); use a shorter one")
    if declare and exchange.startswith(RESERVED_PREFIX):
        raise PublishRefused(f"exchange {exchange!r}: names starting with {RESERVED_PREFIX} are reserved for the "
                             "broker's own exchanges (declaring one is refused, 403 ACCESS_REFUSED); use another name")
    for body in bodies:
        if len(body) > MAX_BODY:
            raise PublishRefused(f"an event of {len(body)} bytes is over RabbitMQ's highest max_message_size "
                                 f"({MAX_BODY} bytes); publish smaller events")


def _with_ids(event: dict, ids: list[str]) -> list[bytes]:
    """``json.dumps(dict(event, id=i)).encode()`` for each id ``i``: the event encoded once around a
    marker, each body the text before it, the id, the text after it (a third of the cost per event;
    per event again if the marker's text is in the event already)."""
    marker = json.dumps(_ID_MARKER)
    text = json.dumps(dict(event, id=_ID_MARKER))
    if text.count(marker) != 1:
        return [json.dumps(dict(event, id=event_id)).encode() for event_id in ids]
    head, tail = text.split(marker)
    string = json.encoder.encode_basestring_ascii   # a JSON string as json.dumps writes it
    return [f"{head}{string(event_id)}{tail}".encode() for event_id in ids]


_ID_MARKER = "\0svc id\0"


def _fresh_ids(base, count: int) -> list[str]:
    """``count`` ids ``<base>-<12 hex digits>``, the digits counting up from a random 48-bit start:
    one draw per publish, not per event. Two publishes share an id only if their starts fall within
    ``count`` of each other (odds about count / 2**47), rarer than ids drawn one by one."""
    start = int.from_bytes(os.urandom(6), "big")
    return [f"{base}-{(start + i) & 0xFFFFFFFFFFFF:012x}" for i in range(count)]


class ConfirmedBatch:
    """One SelectConnection that sends every body (persistent, mandatory), then waits for all
    confirms (or the deadline); to the first node of ``amqp_url`` (one URL or several,
    comma-separated) that answers. ``run()`` gives the PublishResult or raises as ``publish()``;
    after it, :meth:`unsettled` names the bodies to send again (a caller that retries). What the
    broker would refuse is refused before connecting (``check_publish``), what it refuses is a
    PublishRefused naming its reason."""

    def __init__(self, amqp_url, exchange, routing_key, bodies, ids, timeout) -> None:
        self.urls = list(split_urls(amqp_url))
        self.url, self.exchange, self.routing_key = self.urls.pop(0), exchange, routing_key
        self.bodies, self.ids, self.timeout = bodies, ids, timeout
        self.pending: set[int] = set()
        self.floor = 1  # every tag below it is confirmed: a "multiple" ack looks at each tag once
        self.confirmed = self.nacked = self.unroutable = 0
        self.sent = False
        self.refused_tags: list[int] = []   # nacked by the broker
        self.returned: list[bytes] = []     # came back unroutable (mandatory)
        self.error: str | None = None
        self.refused: BrokerRefused | None = None
        self.opened = False

    def run(self) -> PublishResult:
        if not self.bodies:
            return PublishResult(0, 0, 0, ())
        check_publish(self.exchange, self.routing_key, self.bodies)   # PublishRefused, nothing sent
        self._connect()
        self.connection.ioloop.call_later(self.timeout, self._on_timeout)
        self.connection.ioloop.start()
        if isinstance(self.refused, PublishRefused) and self.confirmed:
            raise PublishRefused(f"{self.refused}; {self.confirmed} of {len(self.bodies)} events before it were "
                                 "confirmed", code=self.refused.code, text=self.refused.text)
        if self.refused:
            raise self.refused
        if self.error:
            raise (BrokerUnavailable if self.confirmed + self.nacked == 0 else PublishError)(self.error)
        return PublishResult(self.confirmed, self.unroutable, self.nacked, tuple(self.ids))

    def unsettled(self) -> list[bytes]:
        """The bodies not known to be in a queue, in publishing order (returned ones last): never
        sent, nacked, returned unroutable, or unconfirmed when the connection or the deadline
        ended. An unconfirmed body may have reached its queue all the same: sent again, it is
        there twice (at-least-once; the consumers' claims make that harmless)."""
        if not self.sent:
            return list(self.bodies)
        tags = sorted(self.pending.union(self.refused_tags))
        return [self.bodies[tag - 1] for tag in tags] + self.returned

    def _connect(self, ioloop=None) -> None:
        self.connection = pika.SelectConnection(amqp.parameters(self.url, self.timeout), on_open_callback=self._on_open,
                                                on_open_error_callback=self._on_open_error,
                                                on_close_callback=self._on_closed, custom_ioloop=ioloop)

    def _on_open(self, connection) -> None:
        self.opened = True
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection, error) -> None:
        self._refused(error, "the connection")
        if self.refused is None and self.urls:  # that node is away: the next node of the cluster
            self.url = self.urls.pop(0)
            self._connect(connection.ioloop)
            return
        self.error = self.error or f"cannot connect to {mask_url(self.url)}: {error!r}"
        connection.ioloop.stop()

    def _refused(self, error, doing: str) -> None:
        """Keep the first refusal no retry cures (pika passes errors to callbacks, not up the stack)."""
        translated = amqp.translate(error, doing, may_declare=False, url=self.url)
        if isinstance(translated, BrokerRefused) and self.refused is None:
            self.refused = translated

    def _on_closed(self, connection, reason) -> None:
        self._refused(reason, "the connection")
        if self.pending and not self.error:
            self.error = f"connection closed with {len(self.pending)} events unconfirmed: {reason!r}"
        connection.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _: self._send(channel))

    def _on_channel_closed(self, channel, reason) -> None:
        # The broker closes the publishing channel over what was published (too large, no such
        # exchange, no permission): a refusal of the publish, named as such.
        self.refused = self.refused or amqp.refused_publish(reason, self.exchange, self.url)
        self._refused(reason, f"publishing to exchange {self.exchange!r}")
        if self.pending and not self.error:
            self.error = f"channel closed with {len(self.pending)} events unconfirmed: {reason!r}"
        self._close()

    def _send(self, channel) -> None:
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        for tag, body in enumerate(self.bodies, start=1):
            channel.basic_publish(self.exchange, self.routing_key, body, properties, mandatory=True)
            self.pending.add(tag)
        self.sent = True

    def _on_return(self, channel, method, properties, body) -> None:
        # The broker returns an unroutable event before it acks it: count it, report it.
        self.unroutable += 1
        self.returned.append(body)

    def _on_confirm(self, frame) -> None:
        method, pending = frame.method, self.pending
        if method.multiple:  # every tag up to this one (not a scan of all pending: 20,000 sent, 200 acks)
            tags = [t for t in range(self.floor, method.delivery_tag + 1) if t in pending]
            self.floor = max(self.floor, method.delivery_tag + 1)
        else:
            tags = [method.delivery_tag] if method.delivery_tag in pending else []
        pending.difference_update(tags)
        if isinstance(method, pika.spec.Basic.Ack):
            self.confirmed += len(tags)
        else:
            self.nacked += len(tags)
            self.refused_tags.extend(tags)
        if not self.pending:
            self._close()

    def _on_timeout(self) -> None:
        unconfirmed = len(self.bodies) - self.confirmed - self.nacked
        if not self.opened:
            # pika's stack timeout (the same deadline) aborts the handshake; a close() now would race it.
            self.error = f"no connection to {mask_url(self.url)} within {self.timeout:g} s"
        else:
            if unconfirmed and not self.error:
                self.error = f"{unconfirmed} of {len(self.bodies)} events not confirmed within {self.timeout:g} s"
            self._close()
        # A blocked connection (resource alarm) or a silent broker may never finish closing:
        # stop waiting for it, so publish() ends within its deadline either way.
        self.connection.ioloop.call_later(CLOSE_GRACE, self.connection.ioloop.stop)

    def _close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
        elif self.connection.is_closed:
            self.connection.ioloop.stop()
