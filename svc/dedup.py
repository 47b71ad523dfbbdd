"""Deduplication with etcd: claim atomically on a lease, mark done with the effect, skip repeats.

Keys: ``<prefix>/dedup/<service>/<encoded id>``, value ``claimed <digest> <lease>`` while a
consumer works on the event, then ``done <digest>`` for the retention time. A window of events is
claimed in one etcd transaction (one nested create-if-absent transaction per event) and committed
in another, so a round trip is paid per batch, not per event.
"""

import enum
import logging
import threading
import time

from . import _etcd, keys
from .effects import effect_key, record
from .errors import DedupUnavailable
from .event import Event

log = logging.getLogger(__name__)

TXN_EVENTS = 64            # events per etcd transaction at first: etcd's default --max-txn-ops is
                           # 128 and an event takes one operation (a nested transaction of up to two)
TXN_BYTES = 1024 * 1024    # bytes per transaction at first: etcd's default --max-request-bytes is 1.5 MiB
IMPORT_PAGE = 5000         # done ids per range request at start (etcd counts the rest of the
                           # range on every page, so small pages cost quadratic time)
RETENTION_LEASE_REUSE = 0.1  # share a retention lease for this fraction of its TTL


class Verdict(enum.Enum):
    CLAIMED = "claimed"          # this consumer may process the event
    OK = "ok"                    # processed: done mark and effect written
    SKIPPED = "skipped"          # done before: ack without processing
    CONFLICT = "conflict"        # same id, other payload: dead-letter
    HELD = "held"                # a live sibling holds the claim: requeue after a short delay
    UNAVAILABLE = "unavailable"  # etcd did not answer: requeue with backoff (fail closed)
    LOST = "lost"                # our claim expired before the done mark: requeue, process again


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


class NoDedup:
    """Deduplication off (the talk's first run): every event is processed, effects still recorded."""

    enabled = False

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str) -> None:
        self.etcd, self.prefix, self.service = etcd, prefix, service
        self.limits = TxnLimits()

    def open(self) -> None:
        """Nothing to import without deduplication."""

    def close(self) -> None:
        """Nothing to release."""

    def claim(self, events: list[Event]) -> "Ready":
        return Ready([Verdict.CLAIMED] * len(events))

    def commit(self, events: list[Event]) -> "InFlight":
        """Send the effect of each event, one transaction per chunk; ``result()`` waits for it."""
        commit = InFlight(self.etcd, [None] * len(events), self.limits)
        add = lambda ops, event: _etcd.add_put(ops, self._effect_key(event), self._record(event))  # noqa: E731
        commit.send(range(len(events)), events, add, lambda event, reply: Verdict.OK)
        return commit

    def _effect_key(self, event: Event) -> bytes:
        return effect_key(self.prefix, self.service, event).encode()

    def _record(self, event: Event) -> bytes:
        return record(self.service, event).encode()


class InFlight:
    """Transactions in flight for one window; ``result()`` waits and gives a verdict per event.
    An event etcd did not answer for is UNAVAILABLE: it is requeued (fail closed), and a done
    mark written after all turns its redelivery into a skip. Events go in transactions that fit
    ``limits``; a transaction etcd refuses as too large is sent again in halves."""

    def __init__(self, etcd: _etcd.Etcd, verdicts: list[Verdict | None], limits: TxnLimits,
                 on_lease_lost=None) -> None:
        self.etcd, self.verdicts, self.limits, self.on_lease_lost = etcd, verdicts, limits, on_lease_lost
        self._parts: list = []
        self._failed = False

    def send(self, indices, events: list[Event], add, judge) -> None:
        """Send ``events`` (verdict slots ``indices``): ``add(ops, event)`` appends an event's one
        operation to a transaction, ``judge(event, reply)`` reads its verdict from etcd's reply."""
        self._add, self._judge = add, judge
        self._send(list(zip(indices, events)))

    def _send(self, items: list) -> None:
        request, part, size = _etcd.new_txn(), [], 0
        for item in items:
            self._add(request.success, item[1])
            op = request.success[-1].ByteSize() + 4  # + the field's tag and length
            if part and (len(part) == self.limits.events or size + op > self.limits.size):
                del request.success[-1]
                self._start(request, part, size)
                request, part, size = _etcd.new_txn(), [], 0
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
        if isinstance(error, _etcd.LeaseNotFound) and self.on_lease_lost is not None:
            self.on_lease_lost()

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
            for (i, event), reply in zip(part, replies):
                self.verdicts[i] = self._judge(event, reply)
        return [Verdict.UNAVAILABLE if v is None else v for v in self.verdicts]


class Ready:
    """Verdicts known without asking etcd, with the same ``result()`` as InFlight."""

    def __init__(self, verdicts: list[Verdict]) -> None:
        self.verdicts = verdicts

    def result(self) -> list[Verdict]:
        return self.verdicts


class EtcdDedup(NoDedup):
    """Deduplication on: claims on a lease, done marks with the effect, a local set of done ids."""

    enabled = True

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str, *,
                 claim_ttl: int, retention: int) -> None:
        super().__init__(etcd, prefix, service)
        self.claim_ttl, self.retention = claim_ttl, retention
        self.key_prefix = keys.dedup_prefix(prefix, service).encode()
        self.done: dict[bytes, bytes] = {}   # encoded id -> digest, from the import and the watch
        self._lease = 0
        self._retention_lease, self._retention_until = 0, 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch = None

    # -- start and stop -----------------------------------------------------------------------

    def open(self) -> None:
        """Import the done ids (paged), then watch the prefix from that revision. Raises
        DedupUnavailable if etcd does not answer (the caller retries)."""
        started = time.monotonic()
        revision = self._import()
        self._lease = self.etcd.grant(self.claim_ttl)
        log.info("imported %d done ids of %s from etcd in %.2f s (revision %d)",
                 len(self.done), self.service, time.monotonic() - started, revision)
        self._start(self._keep_claims_alive, "claim-keepalive")
        self._start(lambda: self._follow(revision + 1), "dedup-watch")

    def _import(self) -> int:
        """Read every done id of this service into ``done``; the revision read at."""
        pages = self.etcd.scan_prefix(self.key_prefix, IMPORT_PAGE)
        skip, done = len(self.key_prefix), {}
        try:
            while True:
                done.update((key[skip:], value[5:]) for key, value in next(pages) if value.startswith(b"done "))
        except StopIteration as end:
            self.done = done
            return end.value

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.cancel()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._lease:
            try:
                self.etcd.revoke(self._lease)  # our claims end now, not after CLAIM_TTL
            except DedupUnavailable:
                pass

    def _start(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"{self.service}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _keep_claims_alive(self) -> None:
        # While we work, our claims must not expire; if they do (etcd was away longer than the
        # TTL), the done transaction's guard fails and the event is requeued, never lost.
        # Each refresh must end before the next is due: a 2 s etcd timeout with CLAIM_TTL=1 would
        # let one slow call outlive the lease.
        interval = self.claim_ttl / 3
        deadline = min(self.etcd.timeout, interval)
        while not self._stop.wait(interval):
            try:
                if self._lease and self.etcd.keepalive(self._lease, timeout=deadline) <= 0:
                    log.warning("claim lease expired; a new one is taken for the next claims")
                    self._lease = 0
            except DedupUnavailable as error:
                log.debug("claim keepalive: %s", error)

    def _follow(self, revision: int) -> None:
        """Learn siblings' done marks (and expiries) from the watch; resume after a break."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._watch = self.etcd.watch_prefix(self.key_prefix, revision)
                for is_put, key, value, mod_revision in self._watch:
                    self._learn(is_put, key, value)
                    revision, delay = mod_revision + 1, 0.2
            except _etcd.Compacted as error:
                log.info("%s; reading the done ids again", error)
                try:
                    revision = self._import() + 1
                except DedupUnavailable as again:
                    log.debug("dedup re-import: %s", again)
            except DedupUnavailable as error:
                log.debug("dedup watch: %s", error)
            if self._watch is not None:
                self._watch.cancel()  # end the broken stream before a new one starts
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _learn(self, is_put: bool, key: bytes, value: bytes) -> None:
        encoded = key[len(self.key_prefix):]
        if not is_put:
            self.done.pop(encoded, None)
        elif value.startswith(b"done "):
            self.done[encoded] = value[5:]

    # -- claim and commit ---------------------------------------------------------------------

    def _key(self, event: Event) -> bytes:
        return self.key_prefix + keys.encode_id(event.id).encode()

    def _claim_value(self, event: Event) -> bytes:
        return f"claimed {event.digest} {self._lease:x}".encode()

    def claim(self, events: list[Event]) -> InFlight:
        """Claim every event not known done: per chunk of the window one transaction holding a
        create-if-absent transaction per event (a claim on our lease, or the current value)."""
        claims = InFlight(self.etcd, [self._known(e) for e in events], self.limits, self._claim_lease_lost)
        todo = [i for i, verdict in enumerate(claims.verdicts) if verdict is None]
        if todo and not self._lease:
            try:
                self._lease = self.etcd.grant(self.claim_ttl)
            except DedupUnavailable as error:
                log.debug("%s", error)
                return claims
        claims.send(todo, [events[i] for i in todo], self._add_claim,
                    lambda event, reply: self._claim_verdict(event, reply.response_txn))
        return claims

    def _add_claim(self, ops, event: Event) -> None:
        key = self._key(event)
        claim = _etcd.add_txn(ops)
        _etcd.add_absent(claim.compare, key)
        _etcd.add_put(claim.success, key, self._claim_value(event), self._lease)
        _etcd.add_get(claim.failure, key)

    def _claim_lease_lost(self) -> None:
        # The claims of this window were refused whole (requeued); the next window claims on a
        # new lease instead of waiting for the keepalive to notice.
        log.warning("claim lease %x is gone from etcd; a new one is taken for the next claims", self._lease)
        self._lease = 0

    def _known(self, event: Event) -> Verdict | None:
        digest = self.done.get(keys.encode_id(event.id).encode())
        if digest is None:
            return None
        return Verdict.SKIPPED if event.matches(digest) else Verdict.CONFLICT

    def _claim_verdict(self, event: Event, reply) -> Verdict:
        if reply.succeeded:
            return Verdict.CLAIMED
        kvs = reply.responses[0].response_range.kvs
        if not kvs:
            return Verdict.HELD
        state, digest, *owner = kvs[0].value.decode().split(" ")
        if not event.matches(digest):
            return Verdict.CONFLICT
        if state == "done":
            self.done[keys.encode_id(event.id).encode()] = digest.encode()
            return Verdict.SKIPPED
        # Our own claim (a redelivery after a broker reconnect) is ours to finish.
        return Verdict.CLAIMED if owner == [f"{self._lease:x}"] else Verdict.HELD

    def commit(self, events: list[Event]) -> InFlight:
        """Per event, one transaction guarded by "the claim is still mine": the done mark (on the
        retention lease) and the effect, written together or not at all."""
        commit = InFlight(self.etcd, [None] * len(events), self.limits, self._retention_lease_lost)
        try:
            lease = self._retention()
        except DedupUnavailable as error:
            log.debug("%s", error)
            return commit

        def add_done(ops, event: Event) -> None:
            key = self._key(event)
            done = _etcd.add_txn(ops)
            _etcd.add_value_is(done.compare, key, self._claim_value(event))
            _etcd.add_put(done.success, key, f"done {event.digest}".encode(), lease)
            _etcd.add_put(done.success, self._effect_key(event), self._record(event))

        commit.send(range(len(events)), events, add_done, self._commit_verdict)
        return commit

    def _commit_verdict(self, event: Event, reply) -> Verdict:
        if not reply.response_txn.succeeded:
            return Verdict.LOST
        self.done[keys.encode_id(event.id).encode()] = event.digest.encode()
        return Verdict.OK

    def _retention_lease_lost(self) -> None:
        # Without this, every commit would fail on the lost lease until its reuse time ran out.
        log.warning("retention lease %x is gone from etcd; a new one is taken for the next done marks",
                    self._retention_lease)
        self._retention_until = 0.0

    def _retention(self) -> int:
        """A lease that keeps done marks for the retention time, shared for a tenth of it."""
        now = time.monotonic()
        if now >= self._retention_until:
            self._retention_lease = self.etcd.grant(self.retention)
            self._retention_until = now + self.retention * RETENTION_LEASE_REUSE
        return self._retention_lease
