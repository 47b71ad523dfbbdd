"""Deduplication with etcd: claim atomically on a lease, mark done with the effect, skip repeats.

Keys: ``<prefix>/dedup/<service>/<encoded id>``, value ``claimed <digest> <lease>`` while a
consumer works on the event, then ``done <digest>`` for the retention time. A window of events is
claimed in one etcd transaction and committed in another, so a round trip is paid per batch, not
per event. The claim is one flat transaction: "none of these keys exists", then a claim per
event; if a key exists (a sibling's claim, a done mark the cache lacks), nothing is written and the
window is claimed again one nested create-if-absent transaction per event, so only that event is
not claimed (and the next window goes per event at once: found keys come in runs). The commit is
one flat transaction: a compare per event ("the claim is still mine"), a done mark per event and
one window record of the effects (svc/effects.py), all written or none; if any claim is no longer
ours, the window is committed again one nested transaction per event (done mark + event record),
so only that event is refused. Two puts per event (claim, done mark), not three.
"""

import functools
import logging
import threading
import time

from . import etcd as _etcd, keys
from .batch import InFlight, Whole
from .errors import DedupUnavailable, EtcdRefused
from .event import Event
from .protocols import Verdict
from .done import DoneIds
from .nodedup import _Effects
from .follow import IMPORT_PAGE, Follow  # noqa: F401  (IMPORT_PAGE: was here)
from .orphans import Orphans, add_release

log = logging.getLogger(__name__)

RETENTION_LEASE_REUSE = 0.1  # share a retention lease for this fraction of its TTL
IMPORT_WAIT = 1.0          # seconds the start waits for the done ids; then it consumes while they are read


class EtcdDedup(_Effects, Orphans, Follow):
    """Deduplication on: claims on a lease, done marks with the effect, a local set of done ids."""

    enabled = True

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str, *,
                 claim_ttl: int, retention: int) -> None:
        super().__init__(etcd, prefix, service)
        self.claim_ttl, self.retention = claim_ttl, retention
        self.key_prefix = keys.dedup_prefix(prefix, service).encode()
        self.done = DoneIds()   # encoded id -> digest: the import, our commits, the watch (svc/done.py)
        # The claim lease is taken and dropped under a lock, each claim window uses one snapshot of
        # it, and the keepalive drops only the lease it found expired: no claim is ever written
        # without a lease (it would never expire, and siblings would hold its event forever).
        self._lease = 0
        self._lease_lock = threading.Lock()
        self._claimed: dict[bytes, bytes] = {}   # key -> value of our claim, from claim to commit
        self._held_own: set[bytes] = set()       # keys of copies held for a window of ours, until its commit
        self._sent: dict[bytes, bytes] = {}      # key -> value of a claim sent, until its answer is read
        # The last claims found a key: the next go per event (see claim). So do a start's first,
        # most often the deliveries its predecessor left unacked, claimed or done by it.
        self._found = True
        self._releasing = None                 # the last release of unfinished claims, in flight
        # Claims of ours no window will finish (answer never came; release maybe not taken): left on our
        # lease, a sibling given the redelivery would hold it forever. key -> value, deleted (guarded) in the background.
        self._orphans: dict[bytes, bytes] = {}
        self._orphans_lock = threading.Lock()
        self._retention_lease, self._retention_until = 0, 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch = None
        self.quota_key = self.key_prefix   # see InFlight: makes etcd count claims and done marks

    # -- start and stop -----------------------------------------------------------------------

    def open(self) -> None:
        """Take the claim lease and start the threads: the watch's imports the done ids (paged) if
        they fit the cache (svc/done.py), then watches the prefix from that revision. Waits up to
        IMPORT_WAIT for the import: a repeat claimed before it ends is found by its claim. Raises
        DedupUnavailable if etcd does not answer (the caller retries), EtcdRefused if it refuses."""
        self.etcd.get(self.key_prefix)   # one key, no range counted: is etcd there, and ours to read?
        self._check_alarms()
        if not self.alarm:  # a lease is a write: under an alarm the first claim takes it, once allowed
            try:
                self._claim_lease()
            except _etcd.NoSpace as error:
                self._on_error(error)
        self._start(self._keep_claims_alive, "claim-keepalive")
        self._start(self._release_orphans, "claim-release")
        imported = threading.Event()
        self._start(lambda: self._follow(None, imported), "dedup-watch")
        if not imported.wait(IMPORT_WAIT):
            log.info("consuming while the done ids of %s are read from etcd", self.service)

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.cancel()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._lease:
            try:
                self.etcd.revoke(self._lease)  # our claims end now, not after CLAIM_TTL
            except (DedupUnavailable, EtcdRefused):
                pass

    def _start(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"{self.service}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _keep_claims_alive(self) -> None:
        # Our claims must not expire while we work (if they do, the done transaction's guard fails and the
        # event is requeued); each refresh ends before the next is due (a 2 s timeout would outlive CLAIM_TTL=1).
        interval = self.claim_ttl / 3
        deadline = min(self.etcd.timeout, interval)
        while not self._stop.wait(interval):
            lease = self._lease
            try:
                if lease and self.etcd.keepalive(lease, timeout=deadline) <= 0:
                    self._drop_lease(lease, "expired")
            except (DedupUnavailable, EtcdRefused) as error:  # a refusal stops the next window's claims
                log.debug("claim keepalive: %s", error)

    def _claim_lease(self) -> int:
        """The claim lease, taken now if there is none (raises DedupUnavailable)."""
        with self._lease_lock:
            if not self._lease:
                self._lease = self.etcd.grant(self.claim_ttl)
            return self._lease

    def _drop_lease(self, lease: int, why: str) -> None:
        """Forget ``lease`` (expired or gone) if it is still the claim lease: the next claims take a
        new one. A lease taken since is kept."""
        with self._lease_lock:
            if self._lease != lease:
                return
            self._lease = 0
        log.warning("claim lease %x %s; a new one is taken for the next claims", lease, why)

    # -- claim and commit ---------------------------------------------------------------------

    def claim_key(self, event: Event) -> bytes:
        """The etcd key of ``event``'s claim and done mark."""
        return self.key_prefix + event.key

    def _claim_value(self, event: Event, lease: int) -> bytes:
        return f"claimed {event.digest} {lease:x}".encode()

    def claim(self, events: list[Event]) -> InFlight:
        """Claim every event not known done: per part of the window one flat transaction, "none of
        these keys exists" then a claim of each on our lease, all written or none (no nesting: etcd
        parses, checks and applies about a third less per claim); a part one of whose keys exists
        (a sibling's claim, a done mark the cache lacks, a claim of ours) wrote nothing and is
        claimed again one create-if-absent transaction per event (a claim on our lease, or the
        current value), so that only the events whose keys exist are not claimed. Keys found come
        in runs (a backlog of repeats the cache lacks, a dead sibling's window, a predecessor's
        deliveries at a start): after a window that found one, and at a start, the next are claimed
        per event at once, until a window finds none."""
        verdicts = [self._known(e) for e in events]
        if self._found:
            claims = InFlight(self.etcd, verdicts, self.limits, self._on_error, self.quota_key)
        else:
            claims = Whole(self.etcd, verdicts, self.limits, self._on_error)
        todo = [i for i, verdict in enumerate(verdicts) if verdict is None]
        if not todo:
            return claims
        if self.alarm:
            try:
                self._check_alarms()  # raised when last seen: cleared yet?
            except DedupUnavailable as error:
                self._on_error(error)
                return claims
            if self.alarm:
                return claims  # fail closed: the rest are UNAVAILABLE (requeued with backoff), known ones skip
        try:
            lease = self._claim_lease()  # one snapshot for the whole window, never 0
        except DedupUnavailable as error:
            self._on_error(error)
            return claims
        self._sent.update((self.claim_key(events[i]), self._claim_value(events[i], lease)) for i in todo)
        todo_events = [events[i] for i in todo]
        if self._found:
            self._found = False   # until this window finds a key (_claim_verdict)
            return self._claim_each(todo_events, lease, claims, todo)
        claims.fallback = functools.partial(self._claim_each, lease=lease)
        self._watch_answers(claims, lease)
        claims.send(todo, todo_events, functools.partial(self._add_claims, lease=lease),
                    lambda event, _reply: self._claim_verdict(event, None, lease))
        return claims

    def _claim_each(self, part: list[Event], lease: int, claims: InFlight | None = None, slots=None) -> InFlight:
        """Claim ``part`` one nested create-if-absent transaction per event, sent in ``claims``
        (verdict slots ``slots``; by default a new InFlight: a flat claim's fallback); its verdicts
        come with ``result()``."""
        if claims is None:
            claims = InFlight(self.etcd, [None] * len(part), self.limits, quota_key=self.quota_key)
        self._watch_answers(claims, lease)
        claims.send(range(len(part)) if slots is None else slots, part, functools.partial(self._add_claim, lease=lease),
                    lambda event, reply: self._claim_verdict(event, reply.response_txn, lease))
        return claims

    def _watch_answers(self, claims: InFlight, lease: int) -> None:
        """What a failed claim request tells (see _on_error), and the claims etcd gave no answer
        for: it may have written them on our lease (orphans, released in the background)."""
        claims.on_error = functools.partial(self._on_error, lease=lease)
        claims.on_unanswered = lambda unanswered: self._orphan(
            (key, self._sent.pop(key, b"")) for key in map(self.claim_key, unanswered))

    def _add_claims(self, request, event: Event, lease: int) -> None:
        """``event``'s part of a flat claim: "its key does not exist", and its claim on ``lease``."""
        key = self.claim_key(event)
        _etcd.add_absent(request.compare, key)
        _etcd.add_put(request.success, key, self._sent.get(key) or self._claim_value(event, lease), lease)

    def _add_claim(self, ops, event: Event, lease: int) -> None:
        key = self.claim_key(event)
        claim = _etcd.add_txn(ops)
        _etcd.add_absent(claim.compare, key)
        _etcd.add_put(claim.success, key, self._sent.get(key) or self._claim_value(event, lease), lease)
        _etcd.add_get(claim.failure, key)

    def _on_error(self, error: DedupUnavailable, lease: int = 0) -> None:
        """A request failed (the events it carried are requeued): learn what the error says."""
        super()._on_error(error)
        if isinstance(error, _etcd.LeaseNotFound) and lease:
            # The next window claims on a new lease instead of waiting for the keepalive to notice.
            self._drop_lease(lease, "is gone from etcd")

    def _known(self, event: Event) -> Verdict | None:
        digest = self.done.get(event.key)
        if digest is None:
            return None
        return Verdict.SKIPPED if event.matches(digest) else Verdict.CONFLICT

    def _claim_verdict(self, event: Event, reply, lease: int) -> Verdict:
        """``event``'s verdict from etcd's ``reply`` to its create-if-absent transaction (None: a
        flat claim that was written)."""
        key = self.claim_key(event)
        sent = self._sent.pop(key, None)
        if self._orphans:
            with self._orphans_lock:
                self._orphans.pop(key, None)  # answered now: this window's to finish
        if reply is None or reply.succeeded:
            self._claimed[key] = sent or self._claim_value(event, lease)
            return Verdict.CLAIMED
        self._found = True   # the next window is claimed per event at once (see claim)
        kvs = reply.responses[0].response_range.kvs
        if not kvs:
            return Verdict.HELD
        state, digest, *owner = kvs[0].value.decode().split(" ")
        if not event.matches(digest):
            return Verdict.CONFLICT
        if state == "done":
            self.done[event.key] = digest.encode()
            self._released(key)   # the watch skips a done mark known here: a copy held for it is due
            return Verdict.SKIPPED
        if key in self._claimed:
            self._held_own.add(key)   # released by that window's commit (_committed)
            return Verdict.HELD   # an earlier window of ours still on it: wait for its end
        if owner != [f"{lease:x}"]:
            return Verdict.HELD   # a sibling's: wait for its end (the watch)
        known = self._known(event)
        if known is not None:
            return known          # an earlier window of ours finished it since etcd answered
        # Our own claim, no window on it (a redelivery after a broker reconnect): ours to finish.
        self._claimed[self.claim_key(event)] = self._claim_value(event, lease)
        return Verdict.CLAIMED

    def commit(self, events: list[Event]) -> InFlight:
        """One transaction per part of the window, guarded by "every claim is still mine": the done
        marks (on the retention lease) and the window record of the effects, written together or
        not at all; a part whose guard fails is committed again per event (done mark and event
        record, each guarded by its own claim), so only the events whose claims are lost lose."""
        # Refused by etcd as a whole under NOSPACE (top-level puts; the fallback's quota_key):
        # UNAVAILABLE, the claims released.
        claimed_values = self._claimed
        # The value each claim was written with (on its lease): the guard compares it.
        claimed = {key: claimed_values.get(key, b"") for key in map(self.claim_key, events)}
        try:
            lease = self._retention()
        except DedupUnavailable as error:
            commit = InFlight(self.etcd, [None] * len(events), self.limits, self._commit_error)
            self._commit_error(error)
            return commit
        base, value_is, put = self.key_prefix, _etcd.add_value_is, _etcd.add_put

        def add_done(request, event: Event) -> None:
            key = base + event.key
            value_is(request.compare, key, claimed[key] or self._claim_value(event, 0))
            put(request.success, key, b"done " + event.digest.encode(), lease)

        def add_done_alone(ops, event: Event) -> None:
            key = base + event.key
            done = _etcd.add_txn(ops)
            value_is(done.compare, key, claimed[key] or self._claim_value(event, 0))
            put(done.success, key, b"done " + event.digest.encode(), lease)
            put(done.success, self._effect_key(event), self._record(event))

        def one_by_one(part: list[Event]) -> InFlight:
            alone = InFlight(self.etcd, [None] * len(part), self.limits, self._commit_error, self.quota_key)
            alone.send(range(len(part)), part, add_done_alone,
                       lambda event, reply: self._committed(event, reply.response_txn.succeeded))
            return alone

        commit = Whole(self.etcd, [None] * len(events), self.limits, self._commit_error,
                       close=self._add_window_record, fallback=one_by_one)
        commit.send(range(len(events)), events, add_done, lambda event, _reply: self._committed(event, True))
        return commit

    def release(self, events: list[Event]) -> None:
        """Delete our claims on ``events``, requeued unfinished (their commit failed), so that a
        sibling given the redelivery need not wait for our lease; not waited for. Each delete is
        guarded by "the claim is still mine"; etcd takes deletes even under NOSPACE. Until etcd
        answers, they are sent again in the background (``_orphans``): a claim left on our lease
        would hold the redelivery from every sibling for as long as we live."""
        claimed = {key: self._claimed.pop(key, b"") for key in map(self.claim_key, events)}
        self._held_own.difference_update(claimed)   # the watch sees these claims deleted
        self._orphan((key, value) for key, value in claimed.items() if value)

        def add_event_release(ops, event: Event) -> None:
            key = self.claim_key(event)
            add_release(ops, (key, claimed[key] or self._claim_value(event, 0)))

        release = InFlight(self.etcd, [None] * len(events), self.limits)
        release.send(range(len(events)), events, add_event_release, None)
        # Kept until the next release: gRPC cancels a call whose future is garbage-collected.
        self._releasing = release

    def abandon(self) -> None:
        """The windows begun so far will not be finished: their deliveries went back to the queue
        with the broker channel or connection that carried them. Their claims are released (in
        the background, until etcd answers) for whichever replica the broker gives them to."""
        claimed, self._claimed, sent, self._sent = self._claimed, {}, self._sent, {}
        self._held_own.clear()   # the watch sees these claims deleted
        self._orphan([*claimed.items(), *sent.items()])   # sent: claims whose answer nobody reads

    def _committed(self, event: Event, succeeded: bool) -> Verdict:
        """The verdict of ``event``'s commit (``succeeded``: its done mark and effect written)."""
        key = self.key_prefix + event.key
        if succeeded:   # in the cache before the claim is forgotten: the watch skips our done mark (_learn)
            self.done[event.key] = event.digest.encode()
        self._claimed.pop(key, None)
        if key in self._held_own:
            self._released(key)   # a copy held for this window: due now (the watch skipped the key while ours)
        return Verdict.OK if succeeded else Verdict.LOST

    def _commit_error(self, error: DedupUnavailable) -> None:
        if isinstance(error, _etcd.LeaseNotFound):
            # Without this, every commit would fail on the lost lease until its reuse time ran out.
            log.warning("retention lease %x is gone from etcd; a new one is taken for the next done marks",
                        self._retention_lease)
            self._retention_until = 0.0
        else:
            self._on_error(error)

    def _released(self, key: bytes) -> None:
        """Copies held for ``key`` are due: told here, not by the watch, which skips what is known."""
        self._held_own.discard(key)
        if self.on_release is not None:
            self.on_release(key)

    def _retention(self) -> int:
        """A lease that keeps done marks for the retention time, shared for a tenth of it."""
        now = time.monotonic()
        if now >= self._retention_until:
            self._retention_lease = self.etcd.grant(self.retention)
            self._retention_until = now + self.retention * RETENTION_LEASE_REUSE
        return self._retention_lease
