"""The dead-sibling runs of bench/bench_svc.py (issue 8 case D, issue 24's goal >= 0.9x), measured
in pairs: two ``python -m svc`` draining at the same time, so both see the same machine.

A survivor: a replica with CRASH_AT=claimed claims a window of a full queue and dies
(:func:`dead_sibling`); its queue is topped up with as many fresh events as it claimed, so the
survivor processes as many events that nobody claimed as its healthy twin does, all of them while
the dead claims live (SIBLING_CLAIM_TTL, the twin's setting too).

A pair (:func:`paired`): the healthy twin and the contender (the survivor, or for the A/A control a
second healthy service) each get their own World (exchange, etcd prefix, service name) on the same
broker and etcd, same queue type, same number of events, same settings; both queues are filled (and
the sibling killed, the survivor's queue topped up) before either service starts; then both start
at once (which first alternates) and each is timed from its own effect records. Each one's rate is
counted over the seconds both drained, from the later first commit to the earlier last one
(:func:`together`): a head start or a tail alone, with the machine to itself, is left out. The ratio
is the contender's events/s over its twin's in those same seconds: both contend for the same 2
cores, RabbitMQ and etcd at once, so a swing of the machine moves both rates, not the ratio. What
pairing does not remove, or adds: the survivor's extra work on the broker and etcd (its held
deliveries) is also paid by its twin, which hides a small part of that cost; a stall of the
survivor (waiting, not working: its longest pause is printed) hands the cores to its twin in those
moments, so in a pair a stall counts about twice (the survivor slower, its twin faster), where
the survivor's rate alone counted it once. The A/A control shows how far apart two identical
services come out measured this way (the method's own noise: see bench/bench_svc.py's docstring).
"""

import itertools
import sys
import time
from bisect import bisect_right
from typing import Callable, NamedTuple

from svc import effects, keys
from nirvana.cost import EVENT, fill
from nirvana.testing import World, wait_for

# The dead sibling's claims outlive the measurement (the survivor is stopped before they end); its
# healthy twin runs with the same CLAIM_TTL (sibling_settings), so the two differ by the sibling only.
SIBLING_CLAIM_TTL = 120
# A pair's ratio is also split at this many seconds into the seconds both drained (at most half of
# them): the first part and the rest. Measured 2026-12-07 (100,000 events a run, paired by hand): a
# classic-queue survivor's whole lag on its twin came in its first 3-4 s (1.2-1.3x fewer commits a
# second), then the two ran level; a lag that grows all the way is a cost per event instead.
HEAD_SECONDS = 3.0
# A pair whose two runs did not drain at the same time (one drained all before the other's first
# commit: a service's start on a loaded machine, ~0.2-1 s, outlasting a short drain) is measured no
# more than this many times, each on fresh services. Seen 2026-12-07: CI's parallel suite, 5,000
# events a run, one drain ended 0.18 s before the other began.
PAIR_TRIES = 3


class NoOverlap(ValueError):
    """A pair's two runs had no seconds in which both drained: no ratio (see :func:`together`)."""


class Pair(NamedTuple):
    """Two services measured at the same time: rates in events/s over ``seconds`` (s), the seconds
    both drained; ``pause``: the contender's longest time between two effects in them (s);
    ``head`` and ``rest``: the contender's rate over its twin's in the first HEAD_SECONDS of them
    (at most half) and in the seconds after (None when not measured): where a lag came from."""
    rate: float
    twin: float
    seconds: float
    pause: float
    head: float | None = None
    rest: float | None = None

    @property
    def ratio(self) -> float:
        """The contender's rate over its twin's, in the same seconds."""
        return self.rate / self.twin


def sibling_settings(**code) -> dict:
    """The settings of every run of a dead-sibling group: ``code``'s, with SIBLING_CLAIM_TTL."""
    return {**code, "claim_ttl": SIBLING_CLAIM_TTL}


def dead_sibling(world: World, service: str, events: int, prefetch: int, **code) -> frozenset[str]:
    """Fill ``service``'s queue with ``events`` events, start a replica with CRASH_AT=claimed that
    claims a window of them and dies, then top the queue up with as many fresh events as it claimed:
    the ids it claimed (its claims live SIBLING_CLAIM_TTL seconds)."""
    fill(world, service, events)
    [dead] = world.start(service, enable_etcd=True, prefetch=prefetch, crash_at="claimed", log_level="WARNING",
                         wait=False, **sibling_settings(**code))
    assert dead.popen.wait(30) == -9, dead.log()
    # The broker drops a killed process's consumer when it sees its connection close (a moment later
    # on a loaded machine); counted still, it would make the survivor's start wait for a second one.
    wait_for(lambda: world.consumers(service) == 0, "the dead sibling's consumer gone", timeout=30)
    base = keys.dedup_prefix(world.prefix, service)
    claimed = frozenset(keys.decode_id(key[len(base):].decode()) for page in world.etcd.scan_prefix(base)
                        for key, value in page if value.startswith(b"claimed "))
    if claimed:
        assert world.publisher(service).publish(EVENT, count=len(claimed), fresh_ids=True).ok
        wait_for(lambda: world.depth(service) == events + len(claimed), "the queue topped up", timeout=60)
    return claimed


def drain_together(runs: list[tuple[World, str, int, frozenset]], prefetch: int, **code) -> list[list[float]]:
    """Start one ``python -m svc`` (dedup on, ``sibling_settings(**code)``) on each of ``runs``
    ((world, service, events, ids a dead sibling claimed)) at once, in that order, wait until each
    has processed its ``events`` (two thirds of SIBLING_CLAIM_TTL at most, while the dead claims
    live: two services at once take up to twice as long as one) and stop them. Each run's effect times (Unix seconds, sorted, one per event). Raises
    AssertionError if a run processed another number of events, or a claimed one."""
    settings = sibling_settings(**code)
    processes = [world.start(service, enable_etcd=True, prefetch=prefetch, log_level="WARNING", wait=False,
                             **settings)[0] for world, service, _, _ in runs]
    for (world, service, _, _), process in zip(runs, processes, strict=True):
        world.wait_consumers(service, 1, [process])
    deadline = time.monotonic() + settings["claim_ttl"] * 2 / 3
    for world, service, events, _ in runs:
        wait_for(lambda world=world, service=service, events=events: world.effects(service) >= events,
                 f"{events} unclaimed events of {service}", timeout=max(1.0, deadline - time.monotonic()), interval=0.3)
    for process in processes:
        assert process.stop() == 0
    found = []
    for world, service, events, claimed in runs:
        records = effects.records(world.etcd, service, prefix=world.prefix)
        assert len(records) == events and not claimed & {record["id"] for record in records}, "a dead claim ended"
        found.append(sorted(record["at"] for record in records))
    return found


def sibling_rate(world: World, service: str, events: int, prefetch: int, **code) -> float:
    """Events/s of ``python -m svc`` alone on a full queue after a sibling claimed a window and died
    (:func:`dead_sibling`), counted over ``events`` events that sibling did not claim, from its
    first effect to its last (bench/bench_compare.py's, against its twin run before or after it)."""
    claimed = dead_sibling(world, service, events, prefetch, **code)
    [times] = drain_together([(world, service, events, claimed)], prefetch, **code)
    return (events - 1) / (times[-1] - times[0])


def paired(twin: tuple[World, str], contender: tuple[World, str], events: int, prefetch: int, *, dead: bool,
           contender_first: bool, **code) -> Pair:
    """The contender's rate against its healthy twin's, both draining ``events`` events at once (see
    the module's docstring): ``twin`` and ``contender`` are (world, service), each a world of its
    own (its own exchange: a fill of one queue must not reach the other). ``dead``: the contender is
    a dead sibling's survivor, else healthy (the A/A control). ``contender_first``: whose service is
    started first."""
    fill(*twin, events)
    if dead:
        claimed = dead_sibling(*contender, events, prefetch, **code)
    else:
        fill(*contender, events)
        claimed = frozenset()
    runs = [(*contender, events, claimed), (*twin, events, frozenset())]
    times = drain_together(runs if contender_first else runs[::-1], prefetch, **code)
    mine, its = times if contender_first else times[::-1]
    return together(mine, its)


def overlapping(measure: Callable[[], Pair], what: str, events: int, tries: int = PAIR_TRIES) -> Pair:
    """``measure()`` (a pair on fresh services each call, e.g. :func:`paired`), again when its two
    runs did not drain at the same time (a line on stderr says so), at most ``tries`` times. Raises
    NoOverlap naming the fix (more ``events`` a run, the bench's --sibling-events) if none did."""
    for attempt in range(1, tries):
        try:
            return measure()
        except NoOverlap as error:
            print(f"{what}: {error}; measured again on fresh services (try {attempt + 1} of {tries})",
                  file=sys.stderr, flush=True)
    try:
        return measure()
    except NoOverlap as error:
        raise NoOverlap(f"{what}: {error} in {tries} tries: raise --sibling-events (now {events}) so that a run "
                        f"drains for longer than a service takes to start") from None


def drained(times: list[float], moment: float) -> float:
    """How many events a run had processed at ``moment`` (s), from its effects' times (sorted, s;
    the events of one commit share its time): linear between two commits, 0 before the first."""
    done = bisect_right(times, moment)
    if done in (0, len(times)):
        return float(done)
    before, after = times[done - 1], times[done]
    return done + (bisect_right(times, after) - done) * (moment - before) / (after - before)


def together(contender: list[float], twin: list[float]) -> Pair:
    """Two runs' rates (events/s) over the seconds both drained: from the later of their first
    commits to the earlier of their last ones, from their effects' times (sorted, s). Raises
    NoOverlap (a ValueError) if those seconds are none."""
    start, end = max(contender[0], twin[0]), min(contender[-1], twin[-1])
    if end <= start:
        raise NoOverlap(f"the two runs did not drain at the same time ({start:.3f} >= {end:.3f})")
    seconds = end - start
    rate, other = (_between(run, start, end) / seconds for run in (contender, twin))
    moments = [start, *sorted({moment for moment in contender if start < moment < end}), end]
    split = start + min(HEAD_SECONDS, seconds / 2)
    head, rest = (_ratio(contender, twin, a, b) for a, b in ((start, split), (split, end)))
    return Pair(rate, other, seconds, max(b - a for a, b in itertools.pairwise(moments)), head, rest)


def _ratio(contender: list[float], twin: list[float], start: float, end: float) -> float | None:
    """The contender's events over its twin's from ``start`` to ``end`` (s); None if the twin drained none."""
    theirs = _between(twin, start, end)
    return _between(contender, start, end) / theirs if theirs else None


def _between(times: list[float], start: float, end: float) -> float:
    """How many events a run processed from ``start`` to ``end`` (s), from its effects' times."""
    return drained(times, end) - drained(times, start)
