"""Counters from Graphite: what the services counted since a mark.

statsd flushes every second and stamps each flush with the rounded second it happened in;
carbon keeps one value per 1 s bucket; graphite-web's render API returns the buckets
(``stats_counts.<name>`` holds the count of one flush). Two rules make a sum precise:

- **since the mark**: a bucket counts when it ends after the mark rounded the way statsd
  rounds its stamps (``ts + step > round(since)``). An event received after the mark is
  flushed after it and stamped ``round(flush) >= round(since)``, so none is missed; an event
  from the last second or so before the mark may be counted too, so take the mark before
  the step you measure, not right after a burst of other events;
- **whole buckets only**: the newest bucket, the one whose interval ``[ts, ts + step)`` has
  not ended at query time (``ts + step > now``), is *partial* — its flush may not have
  happened or reached carbon yet — and is dropped. Every bucket that has ended was flushed
  at most half a second after its start, so it is final.

A counter nobody has incremented yet has no series at all: it reads as 0 (``exists`` is
False), never as an error.

**Complete, or saying it is not.** A flush statsd could not deliver (carbon down or restarting)
is dropped by statsd, with the counts it held: Graphite then shows fewer events than happened,
and nothing in the series says so. Each count the kit reads (:func:`counters`, :func:`counter`,
:func:`wait_until`) is therefore a :class:`Count`, an ``int`` that prints as today when Graphite
holds every flush since the mark, and otherwise with what is missing, e.g. ``57 (incomplete: statsd
could not reach carbon at 05:13:34 (7 flushes failed))``. Where that comes from (:func:`check`):

- statsd writes its own counters with every flush (``stats_counts.statsd.metrics_received``
  among them, stamped like the kit's): a whole second of the window without that point is a flush
  Graphite does not hold, unless statsd skipped that second (its ``stats.gauges.statsd.timestamp_lag``);
- with every flush it delivers, statsd's Graphite backend also writes the time of the one it
  delivered before (``stats.statsd.graphiteStats.last_flush``): a point stamped ``t`` holding
  ``v`` says the flushes between ``v`` and ``t`` could not be delivered ("statsd could not reach
  carbon"); a missing flush it delivered was lost by carbon (ended before writing it);
- statsd's admin port (:func:`nirvana.stack.statsd.flush_state`) says whether it delivers now
  (its last flush under 2 s ago) and when it started: one started after the mark lost what it
  held, and what was sent to it while it was down.
"""

import math
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from svc import metrics

from . import endpoints
from ._wait import Progress, poll
from .errors import GraphiteError, GraphiteUnavailable
from .render_api import datapoints, post_render
from .settings import current
from .stack import statsd as statsd_admin

PREFIX = "stats_counts."
# statsd's own series, written with every flush it delivers (its Graphite backend, legacy namespace):
FLUSHED = "stats_counts.statsd.metrics_received"       # stamped like the counters: a point = that flush is in Graphite
DELIVERED = "stats.statsd.graphiteStats.last_flush"    # when the flush delivered before this one was
SKIPS = "stats.gauges.statsd.timestamp_lag"            # seconds statsd's stamp jumped past one interval (none flushed)
STATSD_SERIES = (FLUSHED, DELIVERED, SKIPS)
DELIVERY_LATE = 3.0     # seconds: statsd's last delivered flush older than this means it cannot deliver now
LOOKBACK = 60           # seconds fetched before the mark, so the aligned first bucket is in range
DEFAULT_TIMEOUT = 15.0


def counter_names(
    services: Iterable[str] | None = None,
    event_type: str | None = None,
    outcomes: Iterable[str] = ("ok", "skipped"),
) -> list[str]:
    """The talk's counters by service: ``["orders_new_order_ok", "orders_new_order_skipped", ...]``.

    ``outcomes`` are names of svc.metrics' builders: ok, skipped, conflict.
    """
    settings = current()
    return [getattr(metrics, outcome)(service, event_type or settings.event_types[0])
            for service in (settings.services if services is None else services) for outcome in outcomes]


def mark() -> float:
    """A point in time to count from: take it just before the step whose effect you count."""
    return time.time()


@dataclass(frozen=True)
class Series:
    """One counter as graphite-web returned it: ``(timestamp, value or None)`` per bucket."""

    name: str
    points: tuple[tuple[int, float | None], ...] = ()
    exists: bool = True

    @property
    def step(self) -> int:
        """Seconds per bucket, read from the timestamps (1 with the kit's retention)."""
        if len(self.points) >= 2:
            return self.points[1][0] - self.points[0][0]
        return 1

    def buckets(self, since: float, now: float) -> list[tuple[int, float]]:
        """The whole buckets since the mark that have ended by ``now`` (None read as 0)."""
        step, first = self.step, math.floor(since + 0.5)  # JavaScript Math.round, as statsd
        return [(ts, value or 0.0) for ts, value in self.points if ts + step > first and ts + step <= now]

    def total(self, since: float, now: float) -> int:
        """Events counted since the mark, the partial newest bucket left out."""
        return int(round(sum(value for _, value in self.buckets(since, now))))

    def cumulative(self, since: float, now: float) -> tuple[list[float], list[int]]:
        """Seconds after the mark (bucket ends) and the running total at each: for plotting."""
        xs, ys, running = [], [], 0.0
        step = self.step
        for ts, value in self.buckets(since, now):
            running += value
            xs.append(ts + step - since)
            ys.append(int(round(running)))
        return xs, ys


def _render(targets: Sequence[str], since: float, now: float, url: str | None) -> dict[str, Series]:
    """Each Graphite target (a full metric path) from before the mark to now, one POST.

    One POST to the render API, whatever the number of targets: as a GET, the targets of ~90
    counters make a request line longer than gunicorn's limit (``limit_request_line``, 4094 bytes,
    https://docs.gunicorn.org/en/stable/settings.html#limit-request-line), refused before
    graphite-web sees it; graphite-web reads render parameters from a POST body as from a query
    string (graphite/render/views.py, parseOptions). Raises GraphiteUnavailable when nothing
    answers, GraphiteError when graphite-web answers with an error.
    """
    targets = list(dict.fromkeys(targets))
    url = url or current().graphite_url
    params = [("target", target) for target in targets]
    params += [("from", str(int(since) - LOOKBACK)), ("until", str(int(now) + 1)), ("format", "json")]
    found = datapoints(post_render(url, params), url, len(targets))
    series = {}
    for target in targets:
        points = found.get(target)
        if points is None:
            series[target] = Series(target, exists=False)
        else:
            series[target] = Series(target, tuple((int(ts), value) for value, ts in points))
    return series


def fetch(
    names: Iterable[str], since: float, *, now: float | None = None, url: str | None = None
) -> dict[str, Series]:
    """Ask graphite-web for ``stats_counts.<name>`` of each name, from before the mark to now.

    One POST (:func:`_render`). Raises GraphiteUnavailable when nothing answers, GraphiteError
    when graphite-web answers with an error. Whether the window is complete: :func:`completeness`.
    """
    names = list(dict.fromkeys(names))
    now = time.time() if now is None else now
    found = _render([PREFIX + name for name in names], since, now, url)
    return {name: Series(name, found[PREFIX + name].points, found[PREFIX + name].exists) for name in names}


@dataclass(frozen=True)
class Gap:
    """Flushes of statsd whose counts Graphite does not hold, inside a window.

    ``kind``: "failed" (statsd could not deliver them to carbon), "failing" (the same, still
    going on), "lost" (delivered, yet not in Graphite: carbon ended before writing them),
    "restarted" (statsd started after the mark: what it held, and what was sent to it while it
    was down, is gone), "no statsd" (its admin port does not answer). ``at``: Unix seconds of the
    first such flush (or of the start); ``flushes``: how many flushes (0 where unknown).
    """

    kind: str
    at: float
    flushes: int = 0

    def __str__(self) -> str:
        at = time.strftime("%H:%M:%S", time.localtime(self.at))
        plural = "es" if self.flushes != 1 else ""
        return {
            "failed": f"statsd could not reach carbon at {at} ({self.flushes} flush{plural} failed)",
            "failing": f"statsd cannot reach carbon since {at} ({self.flushes} flush{plural} failed so far)",
            "lost": f"carbon lost {self.flushes} flush{plural} statsd delivered at {at} (it ended before writing them?)",
            "restarted": f"statsd restarted at {at}: the counts it held or was sent while down are lost",
            "no statsd": f"statsd is not answering on its admin port {endpoints.STATSD_ADMIN_PORT}: counts sent "
                         "to it are lost (`./kit up` starts it)",
        }[self.kind]


@dataclass(frozen=True)
class Incomplete:
    """Why the counts of a window are short: its :class:`Gap` s, first first; ``str()`` is one line."""

    gaps: tuple[Gap, ...]

    @property
    def flushes(self) -> int:
        """Flushes missing in all (the gaps whose count is known)."""
        return sum(gap.flushes for gap in self.gaps)

    def __str__(self) -> str:
        return "incomplete: " + "; ".join(str(gap) for gap in self.gaps)


def _runs(stamps: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted whole seconds as (first, count) runs of consecutive ones."""
    runs: list[list[int]] = []
    for stamp in sorted(set(stamps)):
        if runs and stamp == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([stamp, 1])
    return [(first, count) for first, count in runs]


def check(since: float, now: float, delivered: Series, skips: Series, flushed: Series,
          state: "statsd_admin.FlushState | None") -> Incomplete | None:
    """None when Graphite holds every flush of statsd in the window from ``since`` to ``now``;
    else what is missing.

    ``delivered``, ``skips`` and ``flushed`` are the :data:`DELIVERED`, :data:`SKIPS` and
    :data:`FLUSHED` series (1 s buckets; with coarser ones only ``state`` is checked); ``state``
    is statsd's admin answer, None when statsd did not answer. A whole second of the window with
    no flush in Graphite (after its first one there) is missing unless statsd skipped it; missing
    seconds statsd says it could not deliver are "failed", the others "lost". Pure.
    """
    first = math.floor(since + 0.5)   # the first flush stamp counted, as Series.buckets rounds the mark
    gaps: list[Gap] = []
    if state is None:
        gaps.append(Gap("no statsd", now))
    elif state.started > since:
        gaps.append(Gap("restarted", state.started))
    failing: list[int] = []
    if state is not None and state.read_at - state.last_flush > DELIVERY_LATE:
        failing = [stamp for stamp in range(int(state.last_flush) + 1, math.floor(now)) if stamp >= first]
        if failing:
            gaps.append(Gap("failing", failing[0], len(failing)))
    present = sorted(ts for ts, value in flushed.points if value is not None)
    if flushed.step == 1 and present:
        failed: set[int] = set()
        for ts, value in delivered.points:   # flushes attempted after the one delivered before
            if value is not None:
                failed.update(range(int(value) + 1, ts))
        skipped = {stamp for ts, lag in skips.points if lag is not None and lag > 0
                   for stamp in range(ts - int(lag), ts)}
        # up to its start statsd was not running (its first flush comes a second later): not carbon's
        started = state.started if state is not None else -math.inf
        seen = set(present)
        missing = [stamp for stamp in range(max(first, present[0]), math.floor(now))
                   if stamp not in seen and stamp not in skipped and stamp > started and stamp not in failing]
        for start, count in _runs(missing):
            run = range(start, start + count)
            if start > present[-1]:
                kind = "failing"    # nothing delivered since: statsd cannot deliver (yet)
            else:
                kind = "failed" if any(stamp in failed for stamp in run) else "lost"
            gaps.append(Gap(kind, start, count))
    if not gaps:
        return None
    return Incomplete(tuple(sorted(gaps, key=lambda gap: (gap.kind == "failing", gap.at))))


def _statsd_state() -> "statsd_admin.FlushState | None":
    try:
        return statsd_admin.flush_state(host=current().statsd_host)
    except (OSError, ValueError):
        return None


def completeness(since: float, now: float | None = None, *, url: str | None = None) -> Incomplete | None:
    """Whether the counts since the mark are whole: None, or :class:`Incomplete` saying what is
    missing (str: ``incomplete: statsd could not reach carbon at HH:MM:SS (N flushes failed)``).

    Reads statsd's own series from graphite-web (one POST) and its admin port. Raises
    GraphiteUnavailable or GraphiteError as :func:`fetch`.
    """
    now = time.time() if now is None else now
    found = _render(STATSD_SERIES, since, now, url)
    return check(since, now, found[DELIVERED], found[SKIPS], found[FLUSHED], _statsd_state())


class Count(int):
    """A counter's total since a mark: an ``int``, plus ``incomplete`` (None, or :class:`Incomplete`).

    Printed (``str``, ``format``, an f-string) it is the bare number when complete, as before; when
    not, the number followed by what is missing: ``57 (incomplete: statsd could not reach carbon at
    05:13:34 (7 flushes failed))``. Arithmetic on it gives a plain ``int``.
    """

    incomplete: "Incomplete | None"

    def __new__(cls, value: int, incomplete: "Incomplete | None" = None) -> "Count":
        count = super().__new__(cls, value)
        count.incomplete = incomplete
        return count

    @property
    def complete(self) -> bool:
        """True when Graphite holds every flush of statsd since the mark."""
        return self.incomplete is None

    def __format__(self, spec: str) -> str:
        text = format(int(self), spec)
        return text if self.incomplete is None else f"{text} ({self.incomplete})"

    def __str__(self) -> str:
        return format(self, "")

    def __repr__(self) -> str:
        return int.__repr__(self) if self.incomplete is None else str(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def counters(names: Iterable[str], since: float, *, url: str | None = None) -> dict[str, Count]:
    """Each counter's total since the mark (0 for a counter with no data yet), one render request
    and one question to statsd's admin port. Each is a :class:`Count`: it prints as the number when
    Graphite holds every flush since the mark, else with what is missing (:func:`check`)."""
    names = list(dict.fromkeys(names))
    now = time.time()
    found = _render([PREFIX + name for name in names] + list(STATSD_SERIES), since, now, url)
    incomplete = check(since, now, found[DELIVERED], found[SKIPS], found[FLUSHED], _statsd_state())
    return {name: Count(found[PREFIX + name].total(since, now), incomplete) for name in names}


def counter(name: str, since: float, *, url: str | None = None) -> Count:
    """One counter's total since the mark: ``counter("orders_new_order_ok", t0)`` (a :class:`Count`)."""
    return counters([name], since, url=url)[name]


def _note(values: Mapping[str, Count]) -> str:
    """`` (incomplete: ...)`` when a value is incomplete, else nothing."""
    incomplete = next((value.incomplete for value in values.values() if getattr(value, "incomplete", None)), None)
    return f" ({incomplete})" if incomplete else ""


def wait_until(
    targets: Mapping[str, int],
    since: float,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str | None = None,
) -> dict[str, int]:
    """Wait until every counter has reached its target since the mark; return their values.

    Prints what it waits for and the values reached; raises TimeoutError naming each counter,
    its target and the value seen when the deadline passes. When Graphite misses flushes of the
    window (:func:`check`), both say so once at the end: ``(incomplete: ...)``.
    """
    what = ", ".join(f"{name} >= {n}" for name, n in targets.items())

    def describe(values: dict[str, Count]) -> str:
        return ", ".join(f"{name} = {int(values[name])} (want {n})" for name, n in targets.items()) + _note(values)

    values = poll(
        lambda: counters(targets, since, url=url),
        lambda values: all(values[name] >= n for name, n in targets.items()),
        what=what,
        timeout=timeout,
        progress=progress,
        describe=describe,
    )
    progress(", ".join(f"{name} = {int(values[name])}" for name in targets) + _note(values))
    return values


def wait_for(
    name: str,
    at_least: int,
    since: float,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress = print,
    url: str | None = None,
) -> int:
    """Wait until one counter has reached ``at_least`` since the mark; return its value (a :class:`Count`)."""
    return wait_until({name: at_least}, since, timeout=timeout, progress=progress, url=url)[name]


__all__ = [
    "GraphiteError", "GraphiteUnavailable", "Series", "Count", "Incomplete", "Gap", "post_render",
    "counter_names", "mark", "fetch", "counter", "counters", "wait_for", "wait_until", "completeness", "check",
]
