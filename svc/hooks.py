"""Named hooks around a window's steps, in the shape of dramatiq's middleware.

The processor (svc/processor.py) calls, in this order, for each window of deliveries:

- ``after_invalid(reason)`` for each body that is not an event (it is dead-lettered);
- ``after_claim(events)`` once the window's claims are answered, with the events claimed (never empty);
- ``work(events)`` with the same events, before their effects are written (a hook may stretch it);
- ``after_send(events)`` once their mails are handed to the outbox (only with OUTBOX_URL);
- ``after_commit(events, verdicts)`` once their commit is answered (one verdict per event);
- ``after_outcome(event, verdict, outcome, elapsed_ms)`` for each event, with what it became;
- ``after_window(outcomes)`` last, with every delivery's outcome.

A hook overrides the calls it needs; the others cost nothing (the processor calls only the
methods a hook overrides). Metrics are one hook (:class:`svc.metrics.MetricsHook`, always on);
fault injection is another (:class:`svc.faults.Faults`, only with CRASH_AT or WORK_MS).
"""

from .protocols import Verdict
from .event import Event
from .outcome import Outcome

NAMES = ("after_invalid", "after_claim", "work", "after_send", "after_commit", "after_outcome", "after_window")


class Hook:
    """Every hook, doing nothing. Subclass it and override what you need; a hook that raises
    stops the window (as a bug in the processor would)."""

    def after_invalid(self, reason: str) -> None:
        """A body of the window is not an event: dead-lettered with ``reason``."""

    def after_claim(self, events: list[Event]) -> None:
        """``events`` (at least one) are claimed: this consumer works on them now."""

    def work(self, events: list[Event]) -> None:
        """The claimed ``events`` are being worked on; their effects are not written yet."""

    def after_send(self, events: list[Event]) -> None:
        """The mails of ``events`` are handed to the outbox; their done marks are not written yet."""

    def after_commit(self, events: list[Event], verdicts: list[Verdict]) -> None:
        """The commit of ``events`` is answered: a verdict each (OK: effect and done mark written)."""

    def after_outcome(self, event: Event, verdict: Verdict, outcome: Outcome, elapsed_ms: float) -> None:
        """``event`` ended as ``verdict`` and will be settled as ``outcome``; ``elapsed_ms`` is the
        window's time from parse to now, in milliseconds."""

    def after_window(self, outcomes: list[Outcome]) -> None:
        """The window is done: ``outcomes`` has one entry per body, in order."""


def bind(hooks, name: str) -> list:
    """The bound methods ``name`` of the hooks that override it (or define it without :class:`Hook`)."""
    base = getattr(Hook, name)
    return [getattr(hook, name) for hook in hooks if getattr(type(hook), name, base) is not base]
