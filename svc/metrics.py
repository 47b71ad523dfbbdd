"""statsd metric names (Graphite path ``stats_counts.<name>``), a batching sender, and the hook
that counts each event's verdict."""

import statsd

from .protocols import Verdict
from .event import Event
from .hooks import Hook
from .outcome import Outcome
from .protocols import Meter


def ok(service: str, event_type: str) -> str:
    return f"{service}_{event_type}_ok"


def skipped(service: str, event_type: str) -> str:
    return f"{service}_{event_type}_skipped"


def conflict(service: str, event_type: str) -> str:
    return f"{service}_{event_type}_conflict"


def timer(service: str, event_type: str) -> str:
    return f"{service}_{event_type}_ms"


def invalid(service: str) -> str:
    return f"{service}_event_invalid"


def dedup_unavailable(service: str) -> str:
    return f"{service}_dedup_unavailable"


def dedup_lost(service: str) -> str:
    """A commit refused because the claim expired first (the work is requeued and done again)."""
    return f"{service}_dedup_lost"


def dead_letter_refused(service: str) -> str:
    """A dead letter the broker refused (kept unacked, published again later)."""
    return f"{service}_dead_letter_refused"


MAX_UDP_BYTES = 1432   # per statsd packet: statsd's advice for Fast Ethernet's MTU (docs/metric_types.md, "Multi-Metric
                       # Packets"); the client's default, 512, is for the Internet, and a window's per-event
                       # timings took three times the system calls


class Metrics:
    """Counts and timings of one service, sent to statsd (UDP: never blocks, never fails the work).

    Counts are summed locally and sent by ``flush()`` once per batch of events.
    """

    def __init__(self, service: str, host: str, port: int) -> None:
        self.service = service
        self._client = statsd.StatsClient(host, port, maxudpsize=MAX_UDP_BYTES)
        self._counts: dict[str, int] = {}
        self._timings: list[tuple[str, float]] = []

    def incr(self, name: str, count: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + count

    def timing(self, name: str, ms: float) -> None:
        self._timings.append((name, ms))

    def flush(self) -> None:
        if not self._counts and not self._timings:
            return
        with self._client.pipeline() as pipe:
            for name, count in self._counts.items():
                pipe.incr(name, count)
            for name, ms in self._timings:
                pipe.timing(name, ms)
        self._counts.clear()
        self._timings.clear()


class MetricsHook(Hook):
    """Counts each event by its verdict (``<service>_<type>_ok`` with its timer, ``_skipped``,
    ``_conflict``, ``<service>_dedup_unavailable``, ``_dedup_lost``) and each invalid body; the
    meter is flushed once per window."""

    def __init__(self, service: str, meter: Meter) -> None:
        self.service, self.meter = service, meter

    def after_invalid(self, reason: str) -> None:
        self.meter.incr(invalid(self.service))

    def after_outcome(self, event: Event, verdict: Verdict, outcome: Outcome, elapsed_ms: float) -> None:
        service, meter = self.service, self.meter
        if verdict is Verdict.OK:
            meter.incr(ok(service, event.type))
            meter.timing(timer(service, event.type), elapsed_ms)
        elif verdict is Verdict.SKIPPED:
            meter.incr(skipped(service, event.type))
        elif verdict is Verdict.CONFLICT:
            meter.incr(conflict(service, event.type))
        elif verdict is Verdict.UNAVAILABLE:
            meter.incr(dedup_unavailable(service))
        elif verdict is Verdict.LOST:
            meter.incr(dedup_lost(service))

    def after_window(self, outcomes: list[Outcome]) -> None:
        self.meter.flush()
