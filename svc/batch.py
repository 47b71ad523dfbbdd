"""A window's operations sent to etcd as transactions that fit the server, and their verdicts.

etcd does not tell its request limits (``--max-txn-ops``, ``--max-request-bytes``): transactions
start at TXN_EVENTS events and TXN_BYTES bytes, and a refused one is sent again in halves, the
smaller size kept (TxnLimits).
"""

import logging

from . import etcd as _etcd
from .errors import DedupUnavailable
from .event import Event
from .protocols import Verdict

log = logging.getLogger(__name__)

TXN_EVENTS = 512           # events per etcd transaction at first, a whole window (a third of the
                           # default PREFETCH): an event takes one operation (a put, or a nested transaction),
                           # and the kit's etcd allows 1024 (assets/etcd). Fewer, larger transactions
                           # cost etcd and svc less per event. An etcd at its default --max-txn-ops
                           # (128) refuses the first large window: halved until it fits, then kept.
TXN_BYTES = 1024 * 1024    # bytes per transaction at first: etcd's default --max-request-bytes is 1.5 MiB


class TxnLimits:
    """How many events (``events``) and bytes (``size``) one transaction may carry. etcd does not
    tell its limits (``--max-txn-ops``, ``--max-request-bytes``); they are learnt from its refusals
    and kept for the life of the process, so only the first transaction over them is refused."""

    def __init__(self, events: int = TXN_EVENTS, size: int = TXN_BYTES) -> None:
        self.events, self.size = events, size

    def shrink(self, events: int, size: int, error: _etcd.TxnTooLarge) -> bool:
        """Lower the limit a refused transaction of ``events`` events and ``size`` bytes broke;
        False if it held one event (nothing smaller to send)."""
        if events <= 1:
            log.error("etcd refuses even one event in a transaction (%s): raise its --max-txn-ops or "
                      "--max-request-bytes; the event is requeued", error)
            return False
        if "too many operations" in str(error):
            self.events = min(self.events, events // 2)
        else:
            self.size = min(self.size, size // 2)
        log.warning("etcd refused a transaction of %d events, %d bytes (%s); from now on at most %d events "
                    "and %d bytes per transaction", events, size, error, self.events, self.size)
        return True


class InFlight:
    """Transactions in flight for one window; ``result()`` waits and gives a verdict per event.
    An event etcd did not answer for is UNAVAILABLE: it is requeued (fail closed), and a done
    mark written after all turns its redelivery into a skip. Events go in transactions that fit
    ``limits``; a transaction etcd refuses as too large is sent again in halves."""

    def __init__(self, etcd: _etcd.Etcd, verdicts: list[Verdict | None], limits: TxnLimits,
                 on_error=None, quota_key: bytes = b"") -> None:
        """``quota_key``: for writes (claims, done marks), a key of ours put in each transaction's
        failure branch, which never runs (the transaction has no compare). etcd 3.4/3.5 count
        toward the space quota only the puts at a transaction's top level, not those of nested
        transactions: with this put counted, etcd refuses the whole transaction while its NOSPACE
        alarm is raised (``etcdserver: mvcc: database space exceeded``), and raises the alarm
        itself when the quota is reached, so no claim is written through the alarm. Releases
        (deletes) go without it: etcd takes deletes under NOSPACE, which is how space is freed."""
        self.etcd, self.verdicts, self.limits, self.on_error = etcd, verdicts, limits, on_error
        self.quota_key = quota_key
        # Called by ``result()`` with the events etcd gave no answer for: it may have applied them.
        self.on_unanswered = None
        self._items: list = []
        self._parts: list = []
        self._failed = False

    def send(self, indices, events: list[Event], add, judge) -> None:
        """Send ``events`` (verdict slots ``indices``): ``add(ops, event)`` appends an event's one
        operation to a transaction, ``judge(event, reply)`` reads its verdict from etcd's reply."""
        self._add, self._judge = add, judge
        self._items = list(zip(indices, events, strict=True))
        self._send(self._items)

    def _new_txn(self):
        request = _etcd.new_txn()
        if self.quota_key:
            _etcd.add_put(request.failure, self.quota_key, b"")  # never runs; counted (see __init__)
        return request

    def _send(self, items: list) -> None:
        """Send ``items`` in transactions of at most ``limits.events`` events, each measured once
        whole (a message's size costs about what building it does: once per operation would double
        a window's cost); one over ``limits.size`` is cut by its operations' sizes."""
        for start in range(0, len(items), self.limits.events):
            part = items[start:start + self.limits.events]
            request = self._new_txn()
            for item in part:
                self._add(request.success, item[1])
            size = request.ByteSize()
            if size <= self.limits.size:
                self._start(request, part, size)
            else:
                self._send_measured(part)

    def _send_measured(self, items: list) -> None:
        request, part, size = self._new_txn(), [], 0
        for item in items:
            self._add(request.success, item[1])
            op = request.success[-1].ByteSize() + 4  # + the field's tag and length
            if part and (len(part) == self.limits.events or size + op > self.limits.size):
                del request.success[-1]
                self._start(request, part, size)
                request, part, size = self._new_txn(), [], 0
                self._add(request.success, item[1])
            part.append(item)
            size += op
        if part:
            self._start(request, part, size)

    def _start(self, request, part: list, size: int) -> None:
        if self._failed:
            return
        try:
            self._parts.append((part, size, self.etcd.txn_async(request)))
        except DedupUnavailable as error:
            self._fail(error)
            self._failed = True

    def _fail(self, error: DedupUnavailable) -> None:
        log.debug("%s", error)
        if self.on_error is not None:
            self.on_error(error)

    def result(self) -> list[Verdict]:
        while self._parts:
            part, size, pending = self._parts.pop(0)
            try:
                reply = pending.result()
            except _etcd.TxnTooLarge as error:
                if self.limits.shrink(len(part), size, error):
                    self._send(part)  # nothing of a refused transaction was applied: send it again
                continue
            except DedupUnavailable as error:
                self._fail(error)
                continue
            self._read(part, reply)
        unanswered = [event for i, event in self._items if self.verdicts[i] is None]
        if unanswered and self.on_unanswered is not None:
            self.on_unanswered(unanswered)
        return [Verdict.UNAVAILABLE if v is None else v for v in self.verdicts]

    def _read(self, part: list, reply) -> None:
        """The verdicts of ``part`` ((index, event) pairs) from etcd's ``reply`` to its transaction."""
        for (i, event), response in zip(part, reply.responses, strict=True):
            self.verdicts[i] = self._judge(event, response)


class Whole(InFlight):
    """A window's claims or commit as one flat transaction per part, all or nothing: ``add(request,
    event)`` puts an event's compares and operations at the transaction's top level, ``close(ops,
    events)`` adds what the part writes once (the commit's window record). A part whose compares
    all hold is judged ``judge(event, None)`` per event; one whose compares do not all hold wrote
    nothing, and is sent again one nested transaction per event (``fallback(events)``: an
    InFlight, sent; its verdicts are taken): only the events whose own compare fails lose, at the
    price of a round trip more.

    With no compares, a part is one put: the window record of an effect-only commit (dedup off).
    Puts at the top level count toward etcd's space quota (see InFlight): no ``quota_key``."""

    def __init__(self, etcd: _etcd.Etcd, verdicts: list[Verdict | None], limits: TxnLimits,
                 on_error=None, close=None, fallback=None) -> None:
        super().__init__(etcd, verdicts, limits, on_error)
        self._close, self.fallback = close, fallback

    def _send(self, items: list) -> None:
        # A part of n events takes n + 1 operations (the window record): one event fewer than
        # limits.events, so an etcd that takes a claim window of limits.events takes this too.
        step = max(1, self.limits.events - 1)
        for start in range(0, len(items), step):
            self._send_part(items[start:start + step])

    def _send_part(self, part: list) -> None:
        request = _etcd.new_txn()
        events = [event for _, event in part]
        add = self._add
        for event in events:
            add(request, event)
        if self._close is not None:
            self._close(request.success, events)
        size = request.ByteSize()
        if size > self.limits.size and len(part) > 1:
            half = len(part) // 2
            self._send_part(part[:half])
            self._send_part(part[half:])
            return
        self._start(request, part, size)

    def _read(self, part: list, reply) -> None:
        if reply.succeeded:
            judge, verdicts = self._judge, self.verdicts
            for i, event in part:
                verdicts[i] = judge(event, None)
            return
        if self.fallback is None:   # cannot be: without compares a transaction always succeeds
            raise AssertionError("a transaction without compares failed")
        log.debug("a compare of a transaction of %d events failed: sent again one nested transaction per event",
                  len(part))
        again = self.fallback([event for _, event in part]).result()
        for (i, _), verdict in zip(part, again, strict=True):
            self.verdicts[i] = verdict


class Ready:
    """Verdicts known without asking etcd, with the same ``result()`` as InFlight."""

    def __init__(self, verdicts: list[Verdict]) -> None:
        self.verdicts = verdicts

    def result(self) -> list[Verdict]:
        return self.verdicts
