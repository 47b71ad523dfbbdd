"""One backoff for every wait on something away: etcd (requeues, the dedup watch, the start's
import), RabbitMQ (a channel reopened, a connection again), a dead letter the broker refused.

A delay that starts at START seconds, doubles at each wait up to LIMIT, and starts again once
things work (``reset``): a short outage costs little, a long one is not hammered.
"""

START = 0.2   # seconds: the first wait
LIMIT = 5.0   # seconds: the longest wait


class Backoff:
    """The delays to wait while something stays away (seconds): ``next()`` gives START, then twice
    the last, up to LIMIT; ``reset()`` after a success; ``slowest()`` to wait LIMIT from now on
    (a refusal said once, retried slowly)."""

    def __init__(self, start: float = START, limit: float = LIMIT) -> None:
        self.start, self.limit = start, limit
        self.delay = start   # seconds the next wait takes

    def next(self) -> float:
        """The delay to wait now (seconds); the one after it is twice as long, up to ``limit``."""
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        """Things work again: the next wait is ``start`` long."""
        self.delay = self.start

    def slowest(self) -> None:
        """Wait ``limit`` from now on, until ``reset``."""
        self.delay = self.limit
