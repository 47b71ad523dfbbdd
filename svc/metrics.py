"""statsd metric names (Graphite path ``stats_counts.<name>``) and a batching sender."""

import statsd


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


def dead_letter_refused(service: str) -> str:
    """A dead letter the broker refused (kept unacked, published again later)."""
    return f"{service}_dead_letter_refused"


class Metrics:
    """Counts and timings of one service, sent to statsd (UDP: never blocks, never fails the work).

    Counts are summed locally and sent by ``flush()`` once per batch of events.
    """

    def __init__(self, service: str, host: str, port: int) -> None:
        self.service = service
        self._client = statsd.StatsClient(host, port)
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
