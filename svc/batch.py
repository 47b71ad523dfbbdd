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
                           # default PREFETCH): an event takes one operation (a nested transaction),
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
                replies = pending.result().responses
            except _etcd.TxnTooLarge as error:
                if self.limits.shrink(len(part), size, error):
                    self._send(part)  # nothing of a refused transaction was applied: send it again
                continue
            except DedupUnavailable as error:
                self._fail(error)
                continue
            for (i, event), reply in zip(part, replies, strict=True):
                self.verdicts[i] = self._judge(event, reply)
        unanswered = [event for i, event in self._items if self.verdicts[i] is None]
        if unanswered and self.on_unanswered is not None:
            self.on_unanswered(unanswered)
        return [Verdict.UNAVAILABLE if v is None else v for v in self.verdicts]


class Ready:
    """Verdicts known without asking etcd, with the same ``result()`` as InFlight."""

    def __init__(self, verdicts: list[Verdict]) -> None:
        self.verdicts = verdicts

    def result(self) -> list[Verdict]:
        return self.verdicts
