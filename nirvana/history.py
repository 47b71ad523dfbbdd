"""Time travel: the read model as it stood at a past moment, rebuilt from the log's events before it.

The log finds events by time: a consumer that passes a timestamp as ``x-stream-offset`` starts at
the first chunk written at or after it (RabbitMQ's "Streams" guide). That gives the offset of the
first event *after* the moment; the last event *before* it is not that offset minus one, because
offsets have gaps (each new segment takes one of its own: a log in segments of 100 bytes skips an
offset before nearly every chunk). So the end is found from the deliveries themselves: the log is
read from its first event and every delivery below the first offset after the moment is applied.

The state is built here, in memory, with the projection's own rules (svc.projection: each id's
first copy, old shapes upcast, what is not an event left out), and never written to etcd: the
versions the readers keep stay as they are.
"""

from __future__ import annotations

import dataclasses
import datetime

from svc import projection, stream, topology
from svc.errors import SvcError
from svc.stream import OFFSET_HEADER, log_end, log_start

from .errors import RabbitUnavailable
from .replay import RebuildError, view_of
from .settings import current

READ_TIMEOUT = 60.0   # seconds to read the log up to the moment
# seconds without a delivery from the moment on before calling the moment later than every event: the
# broker attaches such a reader at the log's end, where nothing comes; a loaded broker takes over half
# a second to send the first chunk of a past moment (svc.stream's edges wait as long for theirs)
NOTHING_AFTER = 2.0
PREFETCH = 1000       # deliveries in flight (a stream needs a prefetch; acks are credit)


@dataclasses.dataclass(frozen=True)
class AsOf:
    """The read model at ``moment``: ``end`` the offset of the last event the log got before it
    (None: none), ``events`` the deliveries read (copies and unreadable bodies included), ``view``
    as svc.projection.read_view gives one (``{"sku/<sku>": {"orders": n, "qty": n}, ...}``), and
    its ``digest`` (svc.projection.digest, comparable with nirvana.replay.digest)."""

    moment: datetime.datetime
    end: int | None
    events: int
    view: dict
    digest: str


def as_of(moment: datetime.datetime, *, timeout: float = READ_TIMEOUT, exchange: str | None = None) -> AsOf:
    """The read model as of ``moment`` (a datetime with its zone), from every event the log got
    before it. The log tells time in whole seconds (an AMQP 0.9.1 timestamp): an event written in
    the moment's own second, before it, counts as after.

    Raises ValueError (one line) for a moment without a zone; RebuildError (one line) when the log
    is empty, when retention has dropped its first events (the state would miss them), or when the
    log is not read up to the moment within ``timeout`` seconds."""
    if not isinstance(moment, datetime.datetime) or moment.tzinfo is None:
        raise ValueError(f"a moment needs its zone, e.g. datetime.now(timezone.utc); got {moment!r}")
    settings = current()
    exchange = exchange or settings.exchange
    name = topology.log_name(exchange)
    first = log_start(settings.amqp_url, exchange)
    if first is None:
        raise RebuildError(f"the log {name} is empty: there is no past to rebuild")
    if first > 0:
        raise RebuildError(f"the log {name} keeps offsets from {first} only (retention dropped the events before): "
                           f"the state as of {moment.isoformat()} would miss them")
    after = first_offset_at(moment, exchange=exchange)
    stop = after if after is not None else log_end(settings.amqp_url, exchange) + 1
    read = _read_before(exchange, stop, timeout)
    end = read[-1][0] if read else None
    view = view_of([body for _, body in read])
    return AsOf(moment, end, len(read), view, projection.digest(view))


def first_offset_at(moment: datetime.datetime, *, exchange: str | None = None) -> int | None:
    """The offset of the first event the log got at or after ``moment`` (whole seconds), None if
    none yet (known after NOTHING_AFTER seconds without a delivery). RabbitUnavailable (one line)
    if the log cannot be read (a stream's member away is read again: svc.stream.read)."""
    exchange = exchange or current().exchange
    seen: list[int] = []

    def on_message(channel, method, properties, body):
        seen.append(int(properties.headers[OFFSET_HEADER]))

    _read(exchange, moment, on_message, lambda: bool(seen), NOTHING_AFTER, prefetch=1,
          doing=f"reading {topology.log_name(exchange)} from {moment.isoformat()}", again=seen.clear)
    return seen[0] if seen else None


def _read_before(exchange: str, stop: int, timeout: float) -> list[tuple[int, bytes]]:
    """``[(offset, body)]`` of the log from its first event, every offset below ``stop``."""
    got: list[tuple[int, bytes]] = []
    done = False
    name = topology.log_name(exchange)

    def on_message(channel, method, properties, body):
        nonlocal done
        offset = int(properties.headers[OFFSET_HEADER])
        if offset >= stop:
            done = True
        elif not done:
            got.append((offset, body))
        channel.basic_ack(method.delivery_tag)

    def again() -> None:   # a read started again (the stream's member was away) starts from the first event
        nonlocal done
        got.clear()
        done = False

    if not _read(exchange, "first", on_message, lambda: done or bool(got and got[-1][0] == stop - 1), timeout,
                 prefetch=PREFETCH, doing=f"reading {name} up to offset {stop}", again=again):
        raise RebuildError(f"the log {name} was read up to offset {got[-1][0] if got else None} of "
                           f"{stop - 1} within {timeout:g} s")
    return got


def _read(exchange: str, start, on_message, done, timeout: float, *, prefetch: int, doing: str, again) -> bool:
    """svc.stream.read on the kit's broker, its errors as RabbitUnavailable (one line)."""
    try:
        return stream.read(current().amqp_url, exchange, start, on_message, done, timeout, prefetch=prefetch,
                           doing=doing, again=again)
    except SvcError as error:
        raise RabbitUnavailable(str(error)) from None
