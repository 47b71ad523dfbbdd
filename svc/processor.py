"""Turn a window of message bodies into outcomes (ack, dead-letter, requeue), broker-agnostic.

Parsing, deduplication, effects and metrics meet here; ``consumer.py`` only applies the outcomes.
"""

import dataclasses
import logging
import os
import signal
import time

from . import metrics
from .dedup import NoDedup, Verdict
from .errors import InvalidEvent
from .event import Event, parse

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Outcome:
    """What to do with one delivery. ``reason`` is set for dead letters, ``backoff`` for requeues
    that wait for etcd (longer, growing) rather than for a sibling (short)."""

    action: str            # "ack" | "dead" | "requeue"
    reason: str = ""
    backoff: bool = False


ACK = Outcome("ack")
HELD = Outcome("requeue")
UNAVAILABLE = Outcome("requeue", backoff=True)


class Processor:
    """``work_ms`` simulates slow work between claim and done; ``crash_at`` ("claimed" or "done")
    makes the process SIGKILL itself at that point of the first window that gets there, so the
    talk's failure windows can be shown and tested exactly."""

    def __init__(self, service: str, dedup: NoDedup, meter: metrics.Metrics, *,
                 work_ms: int = 0, crash_at: str = "") -> None:
        self.service, self.dedup, self.meter = service, dedup, meter
        self.work_ms, self.crash_at = work_ms, crash_at

    def process(self, bodies: list[bytes]) -> list[Outcome]:
        return self.begin(bodies).finish()

    def begin(self, bodies: list[bytes]) -> "Window":
        """Parse a window and send its claims. ``proceed()`` waits for them and sends the commit,
        ``finish()`` waits for that: between the steps the consumer settles the previous window
        and takes in the next one, so etcd's round trips overlap with the broker's."""
        return Window(self, bodies)

    def _fault(self, point: str) -> None:
        if self.crash_at == point:
            self.meter.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def _outcome(self, event: Event, verdict: Verdict, elapsed_ms: float) -> Outcome:
        service = self.service
        if verdict is Verdict.OK:
            self.meter.incr(metrics.ok(service, event.type))
            self.meter.timing(metrics.timer(service, event.type), elapsed_ms)
            return ACK
        if verdict is Verdict.SKIPPED:
            self.meter.incr(metrics.skipped(service, event.type))
            return ACK
        if verdict is Verdict.CONFLICT:
            self.meter.incr(metrics.conflict(service, event.type))
            return Outcome("dead", f"conflict: id {event.id[:64]!r} was seen with another payload")
        if verdict is Verdict.UNAVAILABLE:
            self.meter.incr(metrics.dedup_unavailable(service))
            return UNAVAILABLE
        return HELD  # HELD by a sibling, or LOST: requeue; the next delivery decides again


class Window:
    """One window of deliveries on its way through parse, claim, work and commit."""

    def __init__(self, processor: Processor, bodies: list[bytes]) -> None:
        self.processor, self.started = processor, time.monotonic()
        meter, service, dedup = processor.meter, processor.service, processor.dedup
        self.outcomes: list[Outcome | None] = [None] * len(bodies)
        self.events: dict[int, Event] = {}
        for i, body in enumerate(bodies):
            try:
                self.events[i] = parse(body)
            except InvalidEvent as error:
                # Never crash, never drop: the body goes to the dead letters with its reason.
                self.outcomes[i] = Outcome("dead", error.reason)
                meter.incr(metrics.invalid(service))
            except Exception as error:  # a case parse missed: one body must not stop the service
                log.exception("parse failed on a body of %d bytes; dead-lettered", len(body))
                reason = f"parse failed: {type(error).__name__}: {error}".replace("\n", " ")[:200]
                self.outcomes[i] = Outcome("dead", reason)
                meter.incr(metrics.invalid(service))
        # With dedup, the first copy of an id in the window leads; its repeats follow its fate.
        leaders: dict[str, int] = {}
        self.followers: dict[int, int] = {}
        for i, event in self.events.items():
            if dedup.enabled and event.id in leaders:
                self.followers[i] = leaders[event.id]
            else:
                leaders.setdefault(event.id, i)
        self.lead = [i for i in self.events if i not in self.followers]
        _trace(self.events, self.events, lambda i: f"parsed {self.events[i].type}"
               + (" (a repeat in this window: follows the first)" if i in self.followers else ""))
        self.claims = dedup.claim([self.events[i] for i in self.lead])
        self.commit = None

    def proceed(self) -> None:
        """Wait for the claims, do the work of what was claimed, send the commit (not waited)."""
        if self.claims is None:
            return
        self.verdicts = dict(zip(self.lead, self.claims.result()))
        self.claims = None
        self.claimed = [i for i in self.lead if self.verdicts[i] is Verdict.CLAIMED]
        enabled = self.processor.dedup.enabled
        _trace(self.events, self.lead, lambda i: f"claim: {self.verdicts[i].value}" if enabled
               else "no claim (dedup off): processed")
        if self.claimed:
            self.processor._fault("claimed")
            _trace(self.events, self.claimed, lambda i: f"work ({self.processor.work_ms} ms)")
            if self.processor.work_ms:
                time.sleep(self.processor.work_ms / 1000)
            self.commit = self.processor.dedup.commit([self.events[i] for i in self.claimed])

    def finish(self) -> list[Outcome]:
        self.proceed()
        verdicts, events, processor = self.verdicts, self.events, self.processor
        if self.commit is not None:
            verdicts.update(zip(self.claimed, self.commit.result()))
            _trace(events, self.claimed, lambda i: _COMMITTED.get((processor.dedup.enabled, verdicts[i]),
                                                                  f"not committed: {verdicts[i].value}"))
            if any(verdicts[i] is Verdict.OK for i in self.claimed):
                processor._fault("done")
        elapsed_ms = (time.monotonic() - self.started) * 1000
        for i, leader in self.followers.items():
            verdicts[i] = _follow(verdicts[leader], events[i].digest == events[leader].digest)
        for i, verdict in verdicts.items():
            self.outcomes[i] = processor._outcome(events[i], verdict, elapsed_ms)
        processor.meter.flush()
        return self.outcomes


_COMMITTED = {(True, Verdict.OK): "done mark and effect written", (False, Verdict.OK): "effect written (no done mark: dedup off)"}


def _trace(events: dict[int, Event], indices, say) -> None:
    """One DEBUG line per event, by id, so ``LOG_LEVEL=DEBUG`` follows an event through its steps."""
    if log.isEnabledFor(logging.DEBUG):
        for i in indices:
            log.debug("event %r: %s", events[i].id[:64], say(i))


def _follow(leader: Verdict, same_payload: bool) -> Verdict:
    """The verdict of a repeat of an id within one window, from its leader's."""
    if leader in (Verdict.OK, Verdict.SKIPPED):
        return Verdict.SKIPPED if same_payload else Verdict.CONFLICT
    return Verdict.UNAVAILABLE if leader is Verdict.UNAVAILABLE else Verdict.HELD
