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
"""

import math
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

import requests

from svc import metrics

from ._wait import Progress, poll
from .settings import current

PREFIX = "stats_counts."
HTTP_TIMEOUT = 2.0      # seconds per render request: graphite-web answers locally in ms
LOOKBACK = 60           # seconds fetched before the mark, so the aligned first bucket is in range
DEFAULT_TIMEOUT = 15.0


class GraphiteUnavailable(ConnectionError):
    """graphite-web did not answer the render API."""


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


def fetch(
    names: Iterable[str], since: float, *, now: float | None = None, url: str | None = None
) -> dict[str, Series]:
    """Ask graphite-web for ``stats_counts.<name>`` of each name, from before the mark to now."""
    names = list(dict.fromkeys(names))
    now = time.time() if now is None else now
    params = [("target", PREFIX + name) for name in names]
    params += [("from", str(int(since) - LOOKBACK)), ("until", str(int(now) + 1)), ("format", "json")]
    try:
        url = url or current().graphite_url
        response = requests.get(f"{url}/render", params=params, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        found = {item["target"]: item["datapoints"] for item in response.json()}
    except requests.RequestException as error:
        raise GraphiteUnavailable(
            f"graphite-web is not answering at {url} ({type(error).__name__}): start the stack with `./kit up`"
        ) from None
    series = {}
    for name in names:
        points = found.get(PREFIX + name)
        if points is None:
            series[name] = Series(name, exists=False)
        else:
            series[name] = Series(name, tuple((int(ts), value) for value, ts in points))
    return series


def counters(names: Iterable[str], since: float, *, url: str | None = None) -> dict[str, int]:
    """Each counter's total since the mark (0 for a counter with no data yet), one request."""
    now = time.time()
    return {name: s.total(since, now) for name, s in fetch(names, since, now=now, url=url).items()}


def counter(name: str, since: float, *, url: str | None = None) -> int:
    """One counter's total since the mark: ``counter("orders_new_order_ok", t0)``."""
    return counters([name], since, url=url)[name]


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
    its target and the value seen when the deadline passes.
    """
    what = ", ".join(f"{name} >= {n}" for name, n in targets.items())

    def describe(values: dict[str, int]) -> str:
        return ", ".join(f"{name} = {values[name]} (want {n})" for name, n in targets.items())

    values = poll(
        lambda: counters(targets, since, url=url),
        lambda values: all(values[name] >= n for name, n in targets.items()),
        what=what,
        timeout=timeout,
        progress=progress,
        describe=describe,
    )
    progress(", ".join(f"{name} = {values[name]}" for name in targets))
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
    """Wait until one counter has reached ``at_least`` since the mark; return its value."""
    return wait_until({name: at_least}, since, timeout=timeout, progress=progress, url=url)[name]


__all__ = [
    "GraphiteUnavailable", "Series",
    "counter_names", "mark", "fetch", "counter", "counters", "wait_for", "wait_until",
]
