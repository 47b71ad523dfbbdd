"""Claims of ours that no window will finish, released in the background until etcd answers.

A claim sent whose answer never came (etcd stopped after applying it, or answered after
ETCD_TIMEOUT), or released after a failed commit without etcd's answer, stays on our claim lease,
which lives as long as we do: a sibling given the redelivery would hold the event until the broker
happens to give it back to us, which it need not ever do. EtcdDedup (svc/dedup.py) keeps such claims
in ``_orphans`` (key -> our claim's value) and this mixin deletes them, each guarded by that value.
"""

import logging

from . import etcd as _etcd
from .batch import InFlight
from .protocols import Verdict
from .errors import EtcdRefused

log = logging.getLogger("svc.dedup")


def add_release(ops, item: tuple[bytes, bytes]) -> None:
    """Append to ``ops`` one nested transaction: delete ``item``'s key (bytes) if it still holds
    ``item``'s value (our claim's, bytes), else nothing."""
    release = _etcd.add_txn(ops)
    _etcd.add_value_is(release.compare, *item)
    _etcd.add_delete(release.success, item[0])


class Orphans:
    """Background release of orphaned claims, mixed into EtcdDedup: it uses the dedup's ``etcd``,
    ``limits``, ``claim_ttl`` (seconds), ``_stop`` (threading.Event), ``_orphans`` and
    ``_orphans_lock``."""

    def _release_orphans(self) -> None:
        """Delete our orphaned claims (see ``_orphans``), each only if it still holds our claim's
        value; those etcd answered for (deleted, or not ours any more) are forgotten."""
        while not self._stop.wait(self.claim_ttl / 3):
            with self._orphans_lock:
                todo = list(self._orphans.items())
            if not todo:
                continue
            release = InFlight(self.etcd, [None] * len(todo), self.limits)
            try:
                release.send(range(len(todo)), todo, add_release, lambda item, reply: Verdict.OK)
                verdicts = release.result()
            except EtcdRefused as error:  # a role revoked after the start: the windows stop svc
                log.debug("orphaned claims: %s", error)
                continue
            answered = [item for item, verdict in zip(todo, verdicts, strict=True) if verdict is Verdict.OK]
            with self._orphans_lock:
                for key, value in answered:
                    if self._orphans.get(key) == value:
                        del self._orphans[key]
            log.debug("%d orphaned claims released", len(answered))

    def _orphan(self, claims) -> None:
        """``claims`` ((key, claim value) pairs) are ours and no window will finish them."""
        with self._orphans_lock:
            self._orphans.update((key, value) for key, value in claims if value)
