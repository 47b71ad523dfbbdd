"""A window of the log applied in memory (svc/replay.py): the state a version has applied, read
from etcd at start, and each window's verdicts, dead letters and commit (one etcd transaction).

With dedup by id, a window's commit holds one *done record* (svc/projection.py: its ids applied and
what their payloads are compared by), not a key per id; the ids of every record are read at start.
"""

import json
import os

from . import amqp, etcd as _etcd, keys, projection
from .errors import InvalidEvent
from .event import Event, parse
from .stream import OFFSET_HEADER


class State:
    """What one version has applied, as read from etcd at start: the tracking record
    (``position``, None before any event), the done ids and the view."""

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str, version: int, dedup: bool) -> None:
        self.etcd, self.prefix, self.service, self.version, self.dedup = etcd, prefix, service, version, dedup
        self.base = projection.version_prefix(prefix, service, version)
        self.tracking = projection.tracking_key(prefix, service, version).encode()
        self.position = projection.read_tracking(etcd, prefix, service, version)
        self.view = projection.read_view(etcd, prefix, service, version)
        self.token, self.applications = os.urandom(6).hex() + "-", 0
        self.done = projection.read_done(etcd, prefix, service, version) if dedup else {}

    def effect_key(self, event: Event) -> bytes:
        # a unique suffix per application (this process's random token and a count): an event
        # applied twice leaves two records
        self.applications += 1
        return f"{self.base}effects/{keys.encode_id(event.id)}/{self.token}{self.applications:x}".encode()


class Window:
    """One window of deliveries applied to a copy of the state: its verdicts, dead letters and commit."""

    def __init__(self, state: State, deliveries: list, max_ops: int) -> None:
        """Apply ``deliveries`` in order while the commit stays within ``max_ops`` operations;
        ``taken`` says how many were (the rest wait for the next window)."""
        self.state = state
        self.view: dict[str, dict] = {}      # the view keys changed, their new values
        self.done: dict[bytes, bytes] = {}   # ids applied: {encoded id: projection.done_value}
        self.applied: list[Event] = []
        self.applied_at: list[int] = []      # the offset of each event applied
        self.skipped: list[Event] = []
        self.dead: list[tuple[int, str, str]] = []   # (index, reason, kind: "invalid" or a conflict's type)
        self.taken = 0
        self.offsets: list[int] = []         # the offset of each delivery taken
        dedup = state.dedup
        for i, (_method, properties, body) in enumerate(deliveries):
            if 2 + (0 if dedup else len(self.applied)) + len(self.view) + 4 > max_ops \
                    and self.taken:
                break
            self.taken = i + 1
            offset = int(properties.headers[OFFSET_HEADER])
            self.offsets.append(offset)
            undecodable = amqp.undecodable(properties)
            if undecodable:
                self.dead.append((i, undecodable, "invalid"))
                continue
            try:
                event = parse(body)
            except InvalidEvent as error:
                self.dead.append((i, error.reason, "invalid"))
                continue
            self._apply(i, event, body, offset)
        self.deliveries = deliveries[:self.taken]

    def _apply(self, i: int, event: Event, body: bytes, offset: int) -> None:
        state = self.state
        if state.dedup:
            encoded = keys.encode_id(event.id).encode()
            value = self.done.get(encoded) or state.done.get(encoded)
            if value is not None:
                if projection.same_payload(value, event, body):
                    self.skipped.append(event)  # a copy of an event applied before: once is enough
                else:
                    self.dead.append((i, f"conflict: id {event.id[:64]!r} was applied with another payload",
                                      event.type))
                return
            self.done[encoded] = projection.done_value(event, body)
        projection.apply(self.view, event, state.view)   # the window's changes, on the state's values
        self.applied.append(event)
        self.applied_at.append(offset)

    def transaction(self, position: bool = True):
        """The commit: the window's done record (its ids applied, one put), effects and view, and
        (``position``) the tracking record, guarded by "the tracking record is what this reader
        last wrote"."""
        state, request = self.state, _etcd.new_txn()
        if position:
            if state.position is None:
                _etcd.add_absent(request.compare, state.tracking)
            else:
                _etcd.add_value_is(request.compare, state.tracking, str(state.position).encode())
            _etcd.add_put(request.success, state.tracking, str(self.offsets[-1]).encode())
        if self.done:   # one record per window (an etcd write per event cost etcd more than svc)
            _etcd.add_put(request.success, projection.done_record_key(state.base, self.offsets[-1]),
                          projection.done_record(self.done))
        if not state.dedup:   # with dedup, the done record of each application is its record
            for event, offset in zip(self.applied, self.applied_at, strict=True):
                # the effect: one record per application, its value the offset it was applied from
                _etcd.add_put(request.success, state.effect_key(event), str(offset).encode())
        for key, value in self.view.items():
            _etcd.add_put(request.success, f"{state.base}{projection.VIEW}{key}".encode(),
                          json.dumps(value, sort_keys=True).encode())
        return request

    def committed(self) -> None:
        """The commit is sent: the state in memory follows what it writes (if etcd refuses it, the
        reader reads the state again from etcd)."""
        state = self.state
        state.done.update(self.done)
        state.view.update(self.view)
        state.position = self.offsets[-1]
