"""The chaos proof's checker: from what was published and what each service did, one row per
service. A pure function (no I/O), so its verdicts are unit-tested on their own.

In the spirit of Jepsen's total-queue check (https://jepsen.io/analyses, "total-queue" in
jepsen.checker): every id published must be accounted for exactly once per service, processed
or dead-lettered; nothing may be processed that was never published.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from svc.keys import normal_id

COLUMNS = ("service", "published", "processed once", "lost", "duplicated", "unexpected",
           "dead-lettered", "left in queue", "verdict")


@dataclass(frozen=True)
class Row:
    """One service's account, in distinct ids (``left_in_queue`` in messages)."""

    service: str
    published: int
    processed_once: int
    lost: int            # published, never processed, not dead-lettered
    duplicated: int      # processed more than once
    unexpected: int      # processed, never published
    dead_lettered: int
    left_in_queue: int

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.left_in_queue)

    def cells(self) -> tuple[str, ...]:
        numbers = (self.published, self.processed_once, self.lost, self.duplicated, self.unexpected,
                   self.dead_lettered, self.left_in_queue)
        return (self.service, *map(str, numbers), "ok" if self.ok else "FAILED")


def check(service: str, published: Iterable[str], processed: Mapping[str, int],
          dead_lettered: Iterable[str] = (), left_in_queue: int = 0) -> Row:
    """Account for every id: ``published`` ids (copies may repeat), ``processed`` times per id
    (effects counted in etcd), ids found in the dead letters, messages still queued. Ids are
    compared as svc compares them, in Unicode NFC (svc.keys.normal_id): ``"caf\u00e9"`` published
    and ``"cafe\u0301"`` published are one id, processed once."""
    ids = {normal_id(i) for i in published}
    dead = {normal_id(i) for i in dead_lettered}
    times: dict[str, int] = {}
    for i, n in processed.items():
        times[normal_id(i)] = times.get(normal_id(i), 0) + n
    processed = times
    return Row(
        service=service,
        published=len(ids),
        processed_once=sum(1 for i in ids if processed.get(i, 0) == 1),
        lost=sum(1 for i in ids if processed.get(i, 0) == 0 and i not in dead),
        duplicated=sum(1 for i in ids if processed.get(i, 0) > 1),
        unexpected=sum(1 for i, n in processed.items() if n > 0 and i not in ids),
        dead_lettered=len(dead),
        left_in_queue=left_in_queue,
    )


def render(rows: Iterable[Row]) -> str:
    """A fixed-width table with a header, one line per row."""
    lines = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) if i in (0, len(COLUMNS) - 1) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in lines)


__all__ = ["Row", "check", "render", "COLUMNS"]
