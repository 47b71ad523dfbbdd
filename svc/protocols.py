"""The shapes the processor works with: a deduplication, its verdicts, a meter.

Structural types (:class:`typing.Protocol`): a class satisfies one by having its members, not by
inheriting. :class:`svc.nodedup.NoDedup`, :class:`svc.dedup.EtcdDedup`, the talk's
:class:`svc.dedup_talk.TalkDedup` and the in-memory :class:`svc.stand_ins.MemoryDedup` are each a
``Dedup``; :class:`svc.metrics.Metrics` and :class:`svc.stand_ins.MemoryMeter` are each a ``Meter``.
"""

import enum
from typing import Callable, Protocol, runtime_checkable

from .event import Event


class Verdict(enum.Enum):
    """A deduplication's answer for one event of a window (``Dedup.claim`` / ``Dedup.commit``)."""

    CLAIMED = "claimed"          # this consumer may process the event
    OK = "ok"                    # processed: done mark and effect written
    SKIPPED = "skipped"          # done before: ack without processing
    CONFLICT = "conflict"        # same id, other payload: dead-letter
    HELD = "held"                # a sibling holds the claim: set aside until it is released
    UNAVAILABLE = "unavailable"  # etcd did not answer: requeue with backoff (fail closed)
    LOST = "lost"                # our claim expired before the done mark: requeue, process again
    RETRY = "retry"              # a repeat in a window whose first copy was not processed: requeue


@runtime_checkable
class Pending(Protocol):
    """Verdicts on their way (an etcd transaction in flight, or already known)."""

    def result(self) -> list[Verdict]:
        """Wait for them: one verdict per event sent, in order."""


@runtime_checkable
class Dedup(Protocol):
    """Decides, per event of a window, whether this consumer processes it, and records its effect.

    ``claim(events)`` answers each event with CLAIMED (process it), SKIPPED (done before),
    CONFLICT (same id, other payload), HELD (a sibling's claim lives) or UNAVAILABLE (etcd away:
    fail closed); ``commit(events)`` writes the claimed events' effects (and done marks), each OK,
    LOST (the claim expired first) or UNAVAILABLE. Neither raises: etcd errors are verdicts.
    """

    enabled: bool                                    # False: no claims, every event processed
    on_release: Callable[[bytes], None] | None       # told the key of each claim that ends (svc.held)
    claim_ttl: int   # seconds a claim outlives its owner's last refresh: a HELD delivery's longest wait
                     # (0: no claims, nothing is ever held)

    def open(self) -> None:
        """Get ready (import what is known done); raises DedupUnavailable while etcd is away."""

    def close(self) -> None:
        """Let go of what is held (leases, threads); never raises."""

    def claim(self, events: list[Event]) -> Pending:
        """Send the claims of a window's leading events; their verdicts come with ``result()``."""

    def commit(self, events: list[Event]) -> Pending:
        """Send the effects (and done marks) of claimed events; OK, LOST or UNAVAILABLE each."""

    def release(self, events: list[Event]) -> None:
        """Let go of our claims on events requeued unfinished (best effort, not waited for)."""

    def abandon(self) -> None:
        """The windows begun so far will not be finished (their broker channel went, their deliveries
        are back in the queue): let go of their claims, for whichever replica gets them (best effort)."""

    def claim_key(self, event: Event) -> bytes:
        """The key a HELD verdict waits on (what ``on_release`` is told when it ends)."""


@runtime_checkable
class Meter(Protocol):
    """Counts and timings of one service, sent in batches (statsd names: svc.metrics)."""

    def incr(self, name: str, count: int = 1) -> None:
        """Add ``count`` to the counter ``name``."""

    def timing(self, name: str, ms: float) -> None:
        """Record one timing of ``ms`` milliseconds under ``name``."""

    def flush(self) -> None:
        """Send what was counted since the last flush (never raises: UDP)."""
