"""One way to wait: poll with a deadline and say what is awaited.

A notebook cell never waits silently: it prints one line when a wait starts, one every few
seconds while it lasts, and the helper returns (or raises a TimeoutError naming what it saw).
"""

import time
from typing import Callable, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")

Progress = Callable[[str], None]

POLL_SECONDS = 0.25
REPORT_EVERY_SECONDS = 5.0


def quiet(_line: str) -> None:
    """A progress sink that says nothing (for callers that report on their own)."""


def poll(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    progress: Progress = print,
    describe: Callable[[T], str] = str,
    interval: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    transient: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``read()`` until ``done(value)``; return that value.

    ``transient``: errors of ``read()`` that mean "not readable yet" (an etcd without a leader for
    a moment, a RabbitMQ node restarting): the wait goes on and says so, and only the deadline ends it.

    Raises WaitTimeout (a TimeoutError) after ``timeout`` seconds, naming ``what`` and the last value
    seen (or the last transient error, when no read had succeeded since).
    """
    start = clock()
    deadline = start + timeout
    next_report = start + REPORT_EVERY_SECONDS
    progress(f"waiting for {what} (up to {timeout:g} s)")
    while True:
        try:
            value, seen = read(), None
        except transient as error:
            value, seen = None, f"{type(error).__name__}: {error}"
        if seen is None and done(value):
            return value
        now = clock()
        if now >= deadline:
            raise WaitTimeout(f"gave up after {timeout:g} s waiting for {what}: saw {seen or describe(value)}")
        if now >= next_report:
            progress(f"  still waiting after {now - start:.0f} s: {seen or describe(value)}")
            next_report += REPORT_EVERY_SECONDS
        sleep(min(interval, max(deadline - now, 0)))


def until_or_stalled(read: Callable[[], T], done: Callable[[T], bool], deadline: float, stall: float,
                     interval: float = 0.05) -> bool:
    """Poll ``read()`` every ``interval`` seconds until ``done(value)`` or the ``deadline`` (a
    ``time.monotonic()`` value); False as soon as the value has not changed for ``stall`` seconds
    (what it waits on is stuck: the caller starts it again), True otherwise."""
    last, moved = read(), time.monotonic()
    while not done(last) and time.monotonic() < deadline:
        time.sleep(interval)
        value = read()
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > stall:
            return False
    return True
