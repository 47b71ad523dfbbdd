"""Deduplication off (the talk's first run), and the effect records every deduplication writes.

svc/dedup.py's EtcdDedup adds claims and done marks to the same effect records: a window's effects
go to etcd as one record (svc/effects.py), with or without deduplication.
"""

from . import etcd as _etcd, keys
from .alarms import Alarms
from .batch import InFlight, Ready, TxnLimits, Whole
from .effects import WINDOWS, record, suffix, window_record
from .event import Event
from .protocols import Verdict


class _Effects(Alarms):
    """What every deduplication of etcd shares: where a service's effect records go, and etcd's
    alarms (svc.alarms). Not a type of its own: the type is the protocol :class:`svc.protocols.Dedup`."""

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str) -> None:
        self.etcd, self.prefix, self.service = etcd, prefix, service
        self.limits = TxnLimits()
        self.effects_base = keys.effects_prefix(prefix, service).encode()
        self.windows_base = self.effects_base + WINDOWS.encode()
        self.on_release = None   # see EtcdDedup: without claims nothing is ever held
        self.alarm = ""    # the alarms etcd has raised ("NOSPACE"): no writes while any is set

    def _effect_key(self, event: Event) -> bytes:
        """svc.effects.effect_key, from the parts made once (the prefix, the event's key)."""
        return self.effects_base + event.key + b"/" + suffix().encode()

    def _record(self, event: Event) -> bytes:
        return record(self.service, event).encode()

    def _add_window_record(self, ops, events: list[Event]) -> None:
        """svc.effects.window_key and window_record: one put of ``events``' effects."""
        _etcd.add_put(ops, self.windows_base + suffix().encode(), window_record(self.service, events))


class NoDedup(_Effects):
    """Deduplication off (the talk's first run): every event is processed, effects still recorded."""

    enabled = False
    claim_ttl = 0   # no claims: nothing is ever held

    def claim_key(self, event: Event) -> bytes:
        """The key a claim would have (never asked: without claims nothing is held)."""
        return keys.dedup_key(self.prefix, self.service, event.id).encode()

    def open(self) -> None:
        """Nothing to import without deduplication."""

    def close(self) -> None:
        """Nothing to release."""

    def claim(self, events: list[Event]) -> "Ready":
        return Ready([Verdict.CLAIMED] * len(events))

    def release(self, events: list[Event]) -> None:
        """Without claims there is nothing to release."""

    def abandon(self) -> None:
        """Without claims there is nothing to let go of."""

    def commit(self, events: list[Event]) -> "InFlight":
        """Send the effects of the events, a window record per transaction (svc/effects.py);
        ``result()`` waits for it."""
        # Top-level puts: etcd counts them toward its space quota and refuses them under NOSPACE.
        commit = Whole(self.etcd, [None] * len(events), self.limits, self._on_error, close=self._add_window_record)
        commit.send(range(len(events)), events, _nothing, self._written)
        return commit

    def _written(self, event: Event, reply) -> Verdict:
        if self.alarm:
            self._set_alarm("")   # etcd took a write: its alarm is gone
        return Verdict.OK


def _nothing(request, event: Event) -> None:
    """Without dedup an event adds nothing of its own to the commit: its window record has it."""
