"""Turn a window of message bodies into outcomes (ack, dead-letter, requeue), broker-agnostic.

Parsing, deduplication, effects and metrics meet here; ``consumer.py`` only applies the outcomes.
"""

import collections
import dataclasses
import logging
import os
import signal
import time

from . import metrics
from .dedup import NoDedup, Verdict
from .errors import InvalidEvent
from .event import Event, parse
from .held import Held
from .mail import MailUnavailable

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class Outcome:
    """What to do with one delivery. ``reason`` is set for dead letters, ``backoff`` for requeues
    that wait for etcd (longer, growing), ``key`` for deliveries held while a sibling's claim on
    that etcd key lives (set aside, see svc.held)."""

    action: str            # "ack" | "dead" | "requeue" | "hold"
    reason: str = ""
    backoff: bool = False
    key: bytes = b""


ACK = Outcome("ack")
REQUEUE = Outcome("requeue")
UNAVAILABLE = Outcome("requeue", backoff=True)


class Processor:
    """``work_ms`` simulates slow work between claim and done; ``crash_at`` ("claimed", "sent" or
    "done") makes the process SIGKILL itself at that point of the first window that gets there, so
    the talk's failure windows can be shown and tested exactly. ``mailer`` (svc/mail.py) hands a
    mail per claimed event to an outbox before the done mark: an effect outside etcd."""

    def __init__(self, service: str, dedup: NoDedup, meter: metrics.Metrics, *,
                 work_ms: int = 0, crash_at: str = "", mailer=None) -> None:
        self.service, self.dedup, self.meter = service, dedup, meter
        self.work_ms, self.crash_at, self.mailer = work_ms, crash_at, mailer

    def held(self) -> Held:
        """A new set of held deliveries (one per broker channel), released by the dedup watch; a
        claim lives at most CLAIM_TTL after its owner's last refresh, so that is the longest wait."""
        held = Held(retry_after=getattr(self.dedup, "claim_ttl", 0) + 0.5)
        self.dedup.on_release = held.release
        return held

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
        if verdict is Verdict.LOST:
            # The done mark is guarded by "the claim is still mine": nothing was written, the event
            # is requeued and processed again by whoever claims it next (fencing, not a double effect).
            self.meter.incr(metrics.dedup_lost(service))
            log.warning("claim on id %r expired before its done mark (this replica paused or lost etcd longer "
                        "than CLAIM_TTL): commit refused, event requeued", event.id[:64])
            return REQUEUE
        if verdict is Verdict.HELD:  # a sibling's claim: set aside, not requeued to the head of the queue
            return Outcome("hold", key=self.dedup.claim_key(event))
        return REQUEUE  # RETRY: the next delivery decides


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
            if self.processor.mailer is not None and not self._mail():
                return
            self.commit = self.processor.dedup.commit([self.events[i] for i in self.claimed])

    def _mail(self) -> bool:
        """Hand the claimed events' mails to the outbox; False (all requeued, our claims kept for
        the redelivery) when it does not take them."""
        try:
            self.processor.mailer.send([self.events[i] for i in self.claimed])
        except MailUnavailable as error:
            log.warning("%s; requeued", error)
            self.verdicts.update(dict.fromkeys(self.claimed, Verdict.UNAVAILABLE))
            self.claimed = []
            return False
        self.processor._fault("sent")
        return True

    def finish(self) -> list[Outcome]:
        self.proceed()
        verdicts, events, processor = self.verdicts, self.events, self.processor
        if self.commit is not None:
            verdicts.update(zip(self.claimed, self.commit.result()))
            _trace(events, self.claimed, lambda i: _COMMITTED.get((processor.dedup.enabled, verdicts[i]),
                                                                  f"not committed: {verdicts[i].value}"))
            if any(verdicts[i] is Verdict.OK for i in self.claimed):
                processor._fault("done")
            # Claimed, not done, requeued: free the claims so a sibling may take the redeliveries.
            unfinished = [events[i] for i in self.claimed if verdicts[i] is Verdict.UNAVAILABLE]
            if unfinished:
                processor.dedup.release(unfinished)
        elapsed_ms = (time.monotonic() - self.started) * 1000
        for i, leader in self.followers.items():
            verdicts[i] = _follow(verdicts[leader], events[i].digest == events[leader].digest)
        for i, verdict in verdicts.items():
            self.outcomes[i] = processor._outcome(events[i], verdict, elapsed_ms)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("window of %d: %s", len(self.outcomes),
                      ", ".join(f"{v.value} {n}" for v, n in collections.Counter(verdicts.values()).items()))
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
    return leader if leader in (Verdict.UNAVAILABLE, Verdict.HELD) else Verdict.RETRY
