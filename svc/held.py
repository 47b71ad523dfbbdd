"""Deliveries set aside while a sibling's claim holds their event id, so they never stall the rest.

A delivery whose id a sibling has claimed (live, or dead with its lease not yet expired) is neither
acked nor requeued: requeued, it would come back at the head of the queue at once and fill every
window again. It waits here, unacked (if this consumer dies it returns to the queue), until the
claim is released — the dedup watch sees the key deleted (the lease expired or was revoked) or
marked done — or until ``retry_after`` seconds have passed (a claim lives at most CLAIM_TTL after
its owner's last refresh; an etcd restart resets every lease to its full TTL, and a re-check that
finds the claim again simply waits once more). Then it is processed again like a new delivery:
claimed, or skipped if the sibling finished it.
"""

import collections
import threading
import time

RECENT = 2.0   # seconds a release is remembered: it may reach us just before the held verdict


class Held:
    """Held deliveries by dedup key; ``release(key)`` is safe from any thread (the watch's)."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._waiting: dict[bytes, list[tuple]] = {}   # key -> [(deadline, delivery, owner)]
        # key -> when (monotonic), oldest first: the watch releases every key marked done (each event
        # of this service), so old releases are dropped from the front as new ones come, O(1) each.
        self._released: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._waited: set[bytes] = set()   # keys whose last wait ended by its deadline, not a release
        self._count = 0                    # deliveries waiting
        self._owners: collections.Counter = collections.Counter()   # owner -> deliveries waiting
        self._since: dict = {}             # owner -> when (monotonic) its deliveries began to wait, unbroken
        # The earliest deadline waiting (monotonic; inf: none): the consumer asks for what is due at
        # every turn of its loop, so that answer is O(1) until something is (500 keys held for a dead
        # sibling's window, scanned at each turn, were about 1% of the survivor's loop: bench_svc.py).
        self._next_due = float("inf")

    def __len__(self) -> int:
        return self._count  # the consumer asks at every turn of its loop: counted, not summed

    def held_by(self, owner) -> int:
        """Deliveries waiting that were held with ``owner`` (a consumer tag)."""
        return self._owners[owner]

    def waiting_since(self, owner) -> float | None:
        """When (time.monotonic(), seconds) ``owner`` last went from no delivery waiting to one:
        it has had one waiting ever since. None when it has none."""
        return self._since.get(owner)

    def hold(self, key: bytes, delivery, now: float | None = None, owner=None) -> bool:
        """Set ``delivery`` aside until ``key`` is released or ``retry_after`` seconds pass; False
        (requeue it instead) if it waited out a whole wait and is held again: a live sibling holds
        the claim and may need the delivery to finish it (it lost its own to a reconnect)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if key in self._waited:
                self._waited.discard(key)
                return False
            # Released a moment ago (the watch was faster than this window): due at once.
            deadline = now if now - self._released.get(key, -RECENT) < RECENT else now + self.retry_after
            self._waiting.setdefault(key, []).append((deadline, delivery, owner))
            self._next_due = min(self._next_due, deadline)
            self._count += 1
            if not self._owners[owner]:
                self._since[owner] = now
            self._owners[owner] += 1
            return True

    def release(self, key: bytes, now: float | None = None) -> None:
        """The claim on ``key`` is gone (deleted or done): its deliveries are due now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if key in self._waiting:
                self._waiting[key] = [(now, *rest) for _, *rest in self._waiting[key]]
                self._next_due = min(self._next_due, now)
            self._released[key] = now
            self._released.move_to_end(key)
            self._waited.discard(key)
            while now - next(iter(self._released.values())) >= RECENT:
                self._released.popitem(last=False)  # forgotten: at most RECENT seconds of releases kept

    def due(self, now: float | None = None) -> list:
        """Take the deliveries whose claim was released or whose wait is over, oldest first."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self._next_due:
                return []   # nothing is due before the earliest deadline (none waiting: inf)
            due, self._next_due = [], float("inf")
            for key in list(self._waiting):
                items = self._waiting[key]
                due += [item for item in items if item[0] <= now]
                rest = [item for item in items if item[0] > now]
                if len(rest) < len(items) and now - self._released.get(key, -RECENT) >= RECENT:
                    self._waited.add(key)
                if rest:
                    self._waiting[key] = rest
                    self._next_due = min(self._next_due, *(item[0] for item in rest))
                else:
                    del self._waiting[key]
            self._count -= len(due)
            self._owners.subtract(owner for _, _, owner in due)
            for owner in {owner for _, _, owner in due}:
                if self._owners[owner] <= 0:
                    self._since.pop(owner, None)
        return [delivery for _, delivery, _ in sorted(due, key=lambda item: item[0])]
