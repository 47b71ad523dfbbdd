"""Chapter 5's instruments: a claim's lease counting down, a crash awaited, an etcd key read.

Each wait has a deadline and says what it waits for. The lease is read through etcd's JSON
gateway (``POST /v3/lease/timetolive``, https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/),
which reads a lease without refreshing it (a keepalive would extend the very lease we watch).
"""

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import requests

from svc import keys
from svc.etcd import Etcd
from svc.config import DEFAULT_ETCD_PREFIX, parse_endpoints

from . import effects, rabbit, services
from ._wait import Progress, poll
from .errors import TRANSIENT_READ_ERRORS

HTTP_TIMEOUT = 2.0     # seconds per request to etcd's gateway on loopback
TICK = 1.0             # seconds between two lines of a countdown


def dedup_value(endpoint: str, service: str, event_id: str, *, prefix: str = DEFAULT_ETCD_PREFIX) -> str | None:
    """The dedup key's value (``claimed <digest> <lease hex>`` or ``done <digest>``), None when absent."""
    etcd = Etcd(parse_endpoints(endpoint))
    try:
        value = etcd.get(keys.dedup_key(prefix, service, event_id))
    finally:
        etcd.close()
    return None if value is None else value.decode()


def lease_left(endpoint: str, lease_hex: str) -> int:
    """Seconds the lease has left (etcd rounds down), -1 once it expired or was revoked.

    Raises requests.RequestException when etcd's gateway does not answer.
    """
    reply = requests.post(f"http://{endpoint}/v3/lease/timetolive", json={"ID": int(lease_hex, 16)},
                          timeout=HTTP_TIMEOUT)
    reply.raise_for_status()
    return int(reply.json().get("TTL", -1))


def _countdown(left: int) -> str:
    """A lease's time to live in words: etcd answers whole seconds, rounded down, -1 once it ended
    (its keys go with it, a moment later)."""
    if left < 0:
        return "ended (etcd removes the claim with it)"
    return f"has {left} s left" if left else "has under 1 s left"


def watch_claim(endpoint: str, service: str, event_id: str, *, timeout: float = 30.0,
                progress: Progress = print) -> str:
    """Print the claim's state once a second until it is done; return the final value.

    A claim left by a dead process shows its lease counting down; when the lease ends, the key
    goes, and the redelivery is claimed and marked done by the live service.
    Raises TimeoutError if the id is not done within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        value = dedup_value(endpoint, service, event_id) or "absent"
        state, *rest = value.split(" ")
        if state == "claimed" and len(rest) == 2:
            line = f"{event_id}: claimed, lease {rest[1]} {_countdown(lease_left(endpoint, rest[1]))}"
        else:
            line = f"{event_id}: {state}"
        if line != last:
            progress(line)
            last = line
        if state == "done":
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {event_id} to be done: {value}")
        time.sleep(TICK / 4)


def wait_crashed(service: str, *, timeout: float = 15.0, progress: Progress = print) -> None:
    """Wait until no process of ``service`` is left (it SIGKILLed itself at its crash point)."""
    poll(lambda: len(services.instances(service)), lambda alive: alive == 0,
         what=f"{service} to crash", timeout=timeout, progress=progress)
    progress(f"{service}: gone (SIGKILL at its crash point)")


def wait_consuming(service: str, consumers: int = 1, *, timeout: float = 20.0, progress: Progress = print) -> int:
    """Wait until the service's queue has ``consumers`` consumers again (after a reconnect); the
    number seen. ``timeout`` in seconds.

    A queue that does not exist yet has no consumer: the wait goes on, since a service declares its
    queue when it starts (``nirvana.rabbit``'s rule that a missing queue is not a count of 0 is kept
    by saying so: the TimeoutError at the deadline reads ``saw 0 (no such queue ...)``).
    Raises WaitTimeout (a TimeoutError), RabbitUnavailable when RabbitMQ does not answer.
    """
    queue = rabbit.queue_of(service)
    counts = poll(lambda: rabbit.queue_counts(queue), lambda c: c.consumers >= consumers,
                  what=f"{consumers} consumer(s) on {queue}", timeout=timeout, progress=progress,
                  describe=lambda c: str(c.consumers) if c.exists else f"0 (no such queue {queue})")
    seen = counts.consumers
    progress(f"{service}: consuming again ({seen} consumer(s))")
    return seen


@dataclass(frozen=True)
class Tally:
    """What became of a list of published ids: how many were published, processed (at least once),
    processed exactly once, more than once (``twice``: the duplicates dedup exists to prevent)."""
    published: int
    processed: int
    once: int
    twice: int

    @property
    def missing(self) -> int:
        """Ids with no effect yet (lost, or still on their way)."""
        return self.published - self.processed

    def __str__(self) -> str:
        return f"{self.published} published, {self.processed} processed, {self.once} once, {self.twice} twice"


def tally(ids: Iterable[str], counts: Mapping[str, int]) -> Tally:
    """The :class:`Tally` of ``ids`` given ``counts`` (``{event id: times processed}``, as
    :func:`nirvana.effects.counts_by_id` returns); ids not in ``counts`` were not processed."""
    times = [counts.get(event_id, 0) for event_id in dict.fromkeys(ids)]
    return Tally(published=len(times), processed=sum(1 for n in times if n),
                 once=sum(1 for n in times if n == 1), twice=sum(1 for n in times if n > 1))


def wait_processed(endpoint: str, service: str, ids: Iterable[str], *, timeout: float = 60.0,
                   progress: Progress = print,
                   read: Callable[[], Mapping[str, int]] | None = None) -> Tally:
    """Wait until every id in ``ids`` has its effect in etcd (``endpoint``, the service's effect
    records: :mod:`svc.effects`); return the final :class:`Tally`. An empty queue is not enough:
    events delivered but not yet done are not in it, nor are those a cut connection is returning.

    Prints the progress every few seconds ("120 of 200 processed ..."); ``read`` replaces the etcd
    read of ``{event id: times processed}`` (for tests). Raises WaitTimeout (a TimeoutError) naming
    the count reached after ``timeout`` seconds.
    """
    ids = list(ids)
    read = read or (lambda: effects.counts_by_id(endpoint, service))
    counts = poll(lambda: tally(ids, read()), lambda seen: seen.missing == 0,
                  what=f"{len(ids)} events processed by {service}", timeout=timeout, progress=progress,
                  transient=TRANSIENT_READ_ERRORS)
    progress(f"{service}: {counts}")
    return counts


__all__ = ["Tally", "dedup_value", "lease_left", "tally", "watch_claim", "wait_crashed", "wait_consuming",
           "wait_processed"]
