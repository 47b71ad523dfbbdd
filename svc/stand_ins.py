"""In-memory stand-ins for etcd and statsd, for unit tests of pure logic only (the way dramatiq's
StubBroker stands in for a broker): ``MemoryDedup`` is a :class:`svc.protocols.Dedup`,
``MemoryMeter`` a :class:`svc.protocols.Meter`. Integration tests use the real services
(the tests, through :mod:`nirvana.testing`, which re-exports them)."""

from .batch import Ready
from .event import Event
from .protocols import Verdict


class MemoryDedup:
    """A :class:`svc.protocols.Dedup` whose claims and done marks live in a dict, the way
    :class:`svc.dedup.EtcdDedup` keeps them in etcd: the first claim of an id wins, a live claim
    holds its repeats, a done id is skipped, the same id with another payload is a conflict.

    ``state`` maps an event id to ``("claimed" | "done", digest)``; ``effects`` lists the ids
    whose effects were written, in order (a double effect shows as a repeated id). With
    ``available`` False every claim and commit answers UNAVAILABLE, as with etcd away.
    ``claim_ttl`` (seconds) is how long a delivery held by another's claim waits at most; this
    one's own live claims are ``claims`` (id -> event), let go of by ``release`` and ``abandon``.
    Two stand-ins given the same ``state`` dict are siblings sharing one etcd.
    """

    enabled = True

    def __init__(self, *, available: bool = True, claim_ttl: int = 10,
                 state: dict[str, tuple[str, str]] | None = None) -> None:
        self.state: dict[str, tuple[str, str]] = {} if state is None else state
        self.effects: list[str] = []
        self.available = available
        self.claim_ttl = claim_ttl
        self.claims: dict[str, Event] = {}
        self.on_release = None

    def open(self) -> None:
        """Nothing to import."""

    def close(self) -> None:
        """Nothing to let go of."""

    def claim_key(self, event: Event) -> bytes:
        return event.id.encode()

    def claim(self, events: list[Event]) -> Ready:
        return Ready([self._claim(event) for event in events])

    def _claim(self, event: Event) -> Verdict:
        if not self.available:
            return Verdict.UNAVAILABLE
        held = self.state.get(event.id)
        if held is None:
            self.state[event.id] = ("claimed", event.digest)
            self.claims[event.id] = event
            return Verdict.CLAIMED
        if held[1] != event.digest:
            return Verdict.CONFLICT
        return Verdict.SKIPPED if held[0] == "done" else Verdict.HELD

    def commit(self, events: list[Event]) -> Ready:
        if not self.available:
            return Ready([Verdict.UNAVAILABLE] * len(events))
        for event in events:
            self.state[event.id] = ("done", event.digest)
            self.claims.pop(event.id, None)
            self.effects.append(event.id)
        return Ready([Verdict.OK] * len(events))

    def release(self, events: list[Event]) -> None:
        for event in events:
            if self.claims.pop(event.id, None) is not None and self.state.get(event.id, ("",))[0] == "claimed":
                del self.state[event.id]
                if self.on_release is not None:
                    self.on_release(self.claim_key(event))

    def abandon(self) -> None:
        """Let go of every claim of the windows begun so far (their deliveries went back to the queue)."""
        self.release(list(self.claims.values()))


class MemoryMeter:
    """A :class:`svc.protocols.Meter` that keeps what it is told: ``counts`` (name -> count, summed
    over flushes), ``timings`` (``(name, ms)`` in order) and ``flushes`` (how many flush calls)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.timings: list[tuple[str, float]] = []
        self.flushes = 0

    def incr(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def timing(self, name: str, ms: float) -> None:
        self.timings.append((name, ms))

    def flush(self) -> None:
        self.flushes += 1


__all__ = ["MemoryDedup", "MemoryMeter"]
