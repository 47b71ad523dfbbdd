"""Fault injection for demos and tests: slow work (``WORK_MS``) and a crash at a point (``CRASH_AT``).

A hook of the processor (svc/hooks.py), installed by svc/service.py only when one of the two is
set; the production path carries neither. ``CRASH_AT`` makes the process SIGKILL itself at one
point of the first window that gets there, so the talk's failure windows can be shown and tested
exactly (the diagram assets/diagrams/one_event.svg):

- ``claimed``: right after the claims are answered, before any work (the claim dies with its lease);
- ``sent``: right after the mails are handed to the outbox, before the done mark (OUTBOX_URL);
- ``done``: right after a done mark is written, before the ack (the redelivery is skipped).

The meter is flushed first, so what was counted before the crash reaches statsd.
"""

import os
import signal
import time
from typing import Callable

from .protocols import Verdict
from .event import Event
from .hooks import Hook

CRASH_POINTS = ("claimed", "sent", "done")
LOG_CRASH_POINTS = ("read", "done", "acked")   # of a reader of the log (SOURCE=log, svc/replay.py)


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash(before_kill: Callable[[], None] = lambda: None, kill: Callable[[], None] = _sigkill) -> None:
    """Run ``before_kill`` (the meter's flush), then SIGKILL this process (or ``kill``)."""
    before_kill()
    kill()


class Faults(Hook):
    """``work_ms`` milliseconds of simulated work per window that claimed events (between the claim
    and the effects); ``crash_at`` one of CRASH_POINTS, or "" for no crash. ``before_kill`` runs
    just before the kill (the meter's flush); ``kill`` is SIGKILL to this process (a test passes
    its own). Raises ValueError for a crash point not in CRASH_POINTS."""

    def __init__(self, *, work_ms: int = 0, crash_at: str = "", before_kill: Callable[[], None] = lambda: None,
                 kill: Callable[[], None] = _sigkill) -> None:
        if crash_at and crash_at not in CRASH_POINTS:
            raise ValueError(f"crash point {crash_at!r} is not one of {', '.join(CRASH_POINTS)}")
        self.work_ms, self.crash_at, self.before_kill, self.kill = work_ms, crash_at, before_kill, kill

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            self.before_kill()
            self.kill()

    def after_claim(self, events: list[Event]) -> None:
        self._crash("claimed")

    def work(self, events: list[Event]) -> None:
        if self.work_ms:
            time.sleep(self.work_ms / 1000)

    def after_send(self, events: list[Event]) -> None:
        self._crash("sent")

    def after_commit(self, events: list[Event], verdicts: list[Verdict]) -> None:
        if any(verdict is Verdict.OK for verdict in verdicts):
            self._crash("done")
