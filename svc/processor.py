"""Turn a window of message bodies into outcomes (ack, dead-letter, requeue), broker-agnostic.

Parsing, deduplication and effects meet here; ``consumer.py`` only applies the outcomes. What
else happens along the way (metrics, simulated work, crashes on purpose) is a hook (svc/hooks.py).
"""

import collections
import logging
import time
from typing import Sequence

from . import hooks as _hooks
from .errors import InvalidEvent
from .event import Event, parse
from .held import Held
from .mail import MailUnavailable
from .metrics import MetricsHook
from .outcome import ACK, REQUEUE, UNAVAILABLE, Outcome, Settlement
from .protocols import Dedup, Meter, Verdict

log = logging.getLogger(__name__)


class Processor:
    """Processes windows of bodies for ``service``: parse, claim (``dedup``), work, commit, outcome.

    ``hooks`` are called around those steps (svc/hooks.py), in their order; by default one,
    :class:`svc.metrics.MetricsHook` counting into ``meter`` (pass it among your own to keep the
    counts). ``meter`` stays the service's meter (the consumer counts its own events there).
    ``mailer`` (svc/mail.py) hands a mail per claimed event to an outbox before the done mark: an
    effect outside etcd."""

    def __init__(self, service: str, dedup: Dedup, meter: Meter, *,
                 hooks: Sequence[_hooks.Hook] | None = None, mailer=None) -> None:
        self.service, self.dedup, self.meter, self.mailer = service, dedup, meter, mailer
        self.hooks = list(hooks) if hooks is not None else [MetricsHook(service, meter)]
        # Only the methods a hook overrides are called: a step no hook watches costs nothing.
        self.on = {name: _hooks.bind(self.hooks, name) for name in _hooks.NAMES}

    def held(self) -> Held:
        """A new set of held deliveries (one per broker channel), released by the dedup watch; a
        claim lives at most CLAIM_TTL after its owner's last refresh, so that is the longest wait."""
        held = Held(retry_after=self.dedup.claim_ttl + 0.5)
        self.dedup.on_release = held.release
        return held

    def abandon(self) -> None:
        """The windows begun so far will not be settled (their broker channel is gone, their
        deliveries back in the queue): let go of their claims, so a sibling given a redelivery
        does not hold it for as long as this replica lives."""
        self.dedup.abandon()

    def process(self, bodies: list[bytes]) -> list[Outcome]:
        return self.begin(bodies).finish()

    def begin(self, bodies: list[bytes]) -> "Window":
        """Parse a window and send its claims. ``proceed()`` waits for them and sends the commit,
        ``finish()`` waits for that: between the steps the consumer settles the previous window
        and takes in the next one, so etcd's round trips overlap with the broker's."""
        return Window(self, bodies)

    def call(self, name: str, *args) -> None:
        """Call the hook ``name`` (one of svc.hooks.NAMES) of every hook that has it, in order."""
        for hook in self.on[name]:
            hook(*args)

    def _outcome(self, event: Event, verdict: Verdict) -> Outcome:
        if verdict is Verdict.OK or verdict is Verdict.SKIPPED:
            return ACK
        if verdict is Verdict.CONFLICT:
            return Outcome(Settlement.DEAD, f"conflict: id {event.id[:64]!r} was seen with another payload")
        if verdict is Verdict.UNAVAILABLE:
            return UNAVAILABLE
        if verdict is Verdict.LOST:
            # The done mark is guarded by "the claim is still mine": nothing was written, the event
            # is requeued and processed again by whoever claims it next (fencing, not a double effect).
            log.warning("claim on id %r expired before its done mark (this replica paused or lost etcd longer "
                        "than CLAIM_TTL): commit refused, event requeued", event.id[:64])
            return REQUEUE
        if verdict is Verdict.HELD:  # a sibling's claim: set aside, not requeued to the head of the queue
            return Outcome(Settlement.HOLD, key=self.dedup.claim_key(event))
        return REQUEUE  # RETRY: the next delivery decides


class Window:
    """One window of deliveries on its way through parse, claim, work and commit."""

    def __init__(self, processor: Processor, bodies: list[bytes]) -> None:
        self.processor, self.started = processor, time.monotonic()
        dedup = processor.dedup
        self.outcomes: list[Outcome | None] = [None] * len(bodies)
        self.events: dict[int, Event] = {}
        for i, body in enumerate(bodies):
            try:
                self.events[i] = parse(body)
            except InvalidEvent as error:
                # Never crash, never drop: the body goes to the dead letters with its reason.
                self.outcomes[i] = Outcome(Settlement.DEAD, error.reason)
                processor.call("after_invalid", error.reason)
            except Exception as error:  # a case parse missed: one body must not stop the service
                log.exception("parse failed on a body of %d bytes; dead-lettered", len(body))
                reason = f"parse failed: {type(error).__name__}: {error}".replace("\n", " ")[:200]
                self.outcomes[i] = Outcome(Settlement.DEAD, reason)
                processor.call("after_invalid", reason)
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
        processor = self.processor
        self.verdicts = dict(zip(self.lead, self.claims.result(), strict=True))
        self.claims = None
        self.claimed = [i for i in self.lead if self.verdicts[i] is Verdict.CLAIMED]
        enabled = processor.dedup.enabled
        _trace(self.events, self.lead, lambda i: f"claim: {self.verdicts[i].value}" if enabled
               else "no claim (dedup off): processed")
        if self.claimed:
            claimed = [self.events[i] for i in self.claimed]
            processor.call("after_claim", claimed)
            started = time.monotonic()
            processor.call("work", claimed)
            took = (time.monotonic() - started) * 1000
            _trace(self.events, self.claimed, lambda i: f"work ({took:.0f} ms)")
            if processor.mailer is not None and not self._mail(claimed):
                return
            self.commit = processor.dedup.commit(claimed)

    def _mail(self, claimed: list[Event]) -> bool:
        """Hand the claimed events' mails to the outbox; False when it does not take them: all
        requeued and our claims released (nothing was done, no mail handed over), so the
        redelivery is claimed afresh, by us or a sibling. A claim kept would look like one an
        earlier window of ours still works on, and hold the redelivery (svc.dedup)."""
        try:
            self.processor.mailer.send(claimed)
        except MailUnavailable as error:
            log.warning("%s; requeued", error)
            self.verdicts.update(dict.fromkeys(self.claimed, Verdict.UNAVAILABLE))
            self.claimed = []
            self.processor.dedup.release(claimed)
            return False
        self.processor.call("after_send", claimed)
        return True

    def finish(self) -> list[Outcome]:
        self.proceed()
        verdicts, events, processor = self.verdicts, self.events, self.processor
        if self.commit is not None:
            committed = self.commit.result()
            verdicts.update(zip(self.claimed, committed, strict=True))
            _trace(events, self.claimed, lambda i: _COMMITTED.get((processor.dedup.enabled, verdicts[i]),
                                                                  f"not committed: {verdicts[i].value}"))
            if processor.on["after_commit"]:
                processor.call("after_commit", [events[i] for i in self.claimed], committed)
            # Claimed, not done, requeued: free the claims so a sibling may take the redeliveries.
            unfinished = [events[i] for i in self.claimed if verdicts[i] is Verdict.UNAVAILABLE]
            if unfinished:
                processor.dedup.release(unfinished)
        elapsed_ms = (time.monotonic() - self.started) * 1000
        for i, leader in self.followers.items():
            verdicts[i] = _follow(verdicts[leader], events[i].digest == events[leader].digest)
        on_outcome, outcome_of, ok, skipped = processor.on["after_outcome"], processor._outcome, Verdict.OK, Verdict.SKIPPED
        for i, verdict in verdicts.items():
            event = events[i]
            # the common verdicts inline: this loop runs per event (bench/bench_processor.py)
            outcome = self.outcomes[i] = ACK if verdict is ok or verdict is skipped else outcome_of(event, verdict)
            for hook in on_outcome:
                hook(event, verdict, outcome, elapsed_ms)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("window of %d: %s", len(self.outcomes),
                      ", ".join(f"{v.value} {n}" for v, n in collections.Counter(verdicts.values()).items()))
        processor.call("after_window", self.outcomes)
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
