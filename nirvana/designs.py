"""Chapter 6: the talk's original design and the kit's claims, through the same two scenarios.

- :func:`replicas_race`: two replicas of ``orders`` handed the two copies of each id at once;
- :func:`crash_in_flush_window`: ``orders`` SIGKILLs itself after the work, before the ack (so
  inside the talk design's one-second flush window), then a fresh process gets the redelivery.

Each returns an :class:`Outcome` counted from the effects in etcd (one record per processing, see
:mod:`svc.effects`): how many times each id was processed, and the *double effects*, processings
beyond the first. The designs are chosen with ``DEDUP_MODE`` (``talk`` or ``claims``, see
:mod:`svc.dedup_talk`); ``orders`` runs with ``ENABLE_ETCD=true`` in both. The broker, exchange,
etcd and prefix are the kit's settings (:mod:`nirvana.settings`), as for the services it starts.
"""

from dataclasses import dataclass
from typing import Iterable, Mapping

from matplotlib.figure import Figure

from svc import effects

from . import rabbit, services
from .publisher import Publisher
from .settings import current
from .plots import subplots
from ._wait import Progress, poll, quiet

DESIGNS = ("talk", "claims")
SERVICE = "orders"
RACE_IDS = 20          # ids published twice each in the replicas scenario
RACE_WORK_MS = 200     # simulated work per window: copies meet while a sibling works
TIMEOUT = 30.0         # seconds for a scenario's events to be handled
LABELS = {"talk": "the talk's design (seen set, flushed each second)", "claims": "claims in etcd (the kit)"}


@dataclass(frozen=True)
class Outcome:
    """One design through one scenario: ``published`` events carrying ``ids`` distinct ids,
    ``processed`` effects recorded for them, ``double`` processings beyond the first."""

    design: str
    scenario: str
    published: int
    ids: int
    processed: int
    double: int


def double_effects(counts: Mapping[str, int], ids: Iterable[str]) -> int:
    """Processings beyond the first, summed over ``ids``: ``{a: 2, b: 1}`` -> 1. Pure."""
    return sum(max(counts.get(event_id, 0) - 1, 0) for event_id in ids)


def outcome(design: str, scenario: str, published: int, ids: list[str], counts: Mapping[str, int]) -> Outcome:
    """The Outcome of a run from the effects counted per id (ids never processed count 0). Pure."""
    processed = sum(counts.get(event_id, 0) for event_id in ids)
    return Outcome(design, scenario, published, len(ids), processed, double_effects(counts, ids))


def _settings(design: str, **extra: str) -> dict[str, str]:
    if design not in DESIGNS:
        raise ValueError(f"design {design!r}: use one of {', '.join(DESIGNS)}")
    return {"DEDUP_MODE": design, **extra}


def _counts(ids: list[str]) -> dict[str, int]:
    kit = current()   # where the kit's services record their effects (ETCD_ENDPOINTS, ETCD_PREFIX)
    every = effects.counts_by_id(kit.etcd_endpoint, SERVICE, prefix=kit.etcd_prefix)
    return {event_id: every.get(event_id, 0) for event_id in ids}


def _drain(design: str, progress: Progress) -> None:
    """Stop gracefully (each replica settles its window; copies held back return to the queue);
    if any came back, one replica handles them, then stops too."""
    services.stop(SERVICE, progress=progress)
    if rabbit.queue_depth(SERVICE):
        services.start(SERVICE, dedup=True, env=_settings(design), progress=progress)
        rabbit.wait_for_depth(SERVICE, 0, timeout=TIMEOUT, progress=progress)
        services.stop(SERVICE, progress=progress)


def replicas_race(design: str, *, ids: int = RACE_IDS, work_ms: int = RACE_WORK_MS,
                  progress: Progress = print) -> Outcome:
    """Two replicas of orders, ``ids`` ids published twice each (the copies side by side, so the
    broker hands one to each replica); returns the Outcome once every copy is settled.

    Raises TimeoutError if the events are not handled within TIMEOUT seconds.
    """
    settings = _settings(design, WORK_MS=str(work_ms))
    services.stop(SERVICE, progress=quiet)
    services.start(SERVICE, dedup=True, replicas=2, env=settings, progress=progress)
    names = [f"{design}-race-{i}" for i in range(ids)]
    with Publisher(services=(SERVICE,)) as publisher:
        for event_id in names:
            publisher.publish({"type": "new_order", "id": event_id}, count=2)
    progress(f"published {2 * ids} events: {ids} ids, each twice")
    poll(lambda: (sum(1 for n in _counts(names).values() if n), rabbit.queue_depth(SERVICE)),
         lambda seen: seen == (ids, 0), what=f"every id processed by {SERVICE} ({design})",
         timeout=TIMEOUT, progress=progress, describe=lambda seen: f"{seen[0]} ids processed, {seen[1]} waiting")
    _drain(design, progress)
    return outcome(design, "two replicas, the same copies", 2 * ids, names, _counts(names))


def crash_in_flush_window(design: str, *, progress: Progress = print) -> Outcome:
    """orders with ``CRASH_AT=done`` SIGKILLs itself after the work, before the ack; a fresh
    orders gets the redelivery. Returns the Outcome for that one event.

    Raises TimeoutError if the crash or the redelivery does not happen within TIMEOUT seconds.
    """
    settings = _settings(design, CRASH_AT="done")
    services.stop(SERVICE, progress=quiet)
    event_id = f"{design}-crash"
    services.start(SERVICE, dedup=True, env=settings, progress=progress)
    with Publisher(services=(SERVICE,)) as publisher:
        publisher.publish({"type": "new_order", "id": event_id})
    poll(lambda: len(services.instances(SERVICE)), lambda alive: alive == 0,
         what=f"{SERVICE} to crash after the work", timeout=TIMEOUT, progress=progress)
    progress(f"{SERVICE}: killed itself (SIGKILL) after the work, before the ack; "
             f"processed {_counts([event_id])[event_id]} time(s) so far")
    services.start(SERVICE, dedup=True, env=_settings(design), progress=progress)
    # The redelivery is at the head of the queue: once a later event is processed, it was handled.
    marker = f"{design}-crash-marker"
    with Publisher(services=(SERVICE,)) as publisher:
        publisher.publish({"type": "new_order", "id": marker})
    poll(lambda: _counts([marker])[marker], lambda n: n >= 1, what="a later event processed",
         timeout=TIMEOUT, progress=progress)
    services.stop(SERVICE, progress=progress)
    return outcome(design, "SIGKILL before the flush, redelivered", 1, [event_id], _counts([event_id]))


def table(outcomes: Iterable[Outcome]) -> str:
    """A fixed-width table: one row per design and scenario."""
    rows = [("scenario", "design", "published", "ids", "processed", "double effects")]
    rows += [(o.scenario, o.design, str(o.published), str(o.ids), str(o.processed), str(o.double))
             for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))) for row in rows)


def plot_double_effects(outcomes: Iterable[Outcome]) -> Figure:
    """Grouped bars: double effects per scenario, one bar per design, the count on each bar."""
    outcomes = list(outcomes)
    scenarios = list(dict.fromkeys(o.scenario for o in outcomes))
    fig, ax = subplots()
    width = 0.8 / len(DESIGNS)
    for d, design in enumerate(DESIGNS):
        values = [next((o.double for o in outcomes if o.design == design and o.scenario == s), 0)
                  for s in scenarios]
        xs = [i + (d - (len(DESIGNS) - 1) / 2) * width for i in range(len(scenarios))]
        bars = ax.bar(xs, values, width, label=LABELS[design])
        ax.bar_label(bars)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_ylabel("double effects")
    ax.set_title("the same scenarios, the two designs")
    ax.margins(y=0.6)   # room for the legend above the bars
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


__all__ = ["Outcome", "DESIGNS", "double_effects", "outcome", "replicas_race", "crash_in_flush_window",
           "table", "plot_double_effects"]
