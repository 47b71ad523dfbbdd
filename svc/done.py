"""The done ids a service remembers: a bounded cache of etcd's done marks, never the truth.

A repeat whose id is here is skipped (or dead-lettered as a conflict) without asking etcd; any
other is asked by its window's claim, a create-if-absent transaction that finds the done mark in
etcd and answers with it. So what is forgotten costs its window a round trip more at most (the flat
claim that finds its key is sent again per event), never a guarantee, and the memory a service needs no longer grows with its traffic: a busy
service's day of done marks (``DEDUP_RETENTION`` 86,400 s, a million ids) took 218 MB and 18 s to
import at start.

Two generations of plain dicts: ids go into the young one; when it holds ``bound`` ids it
becomes the old one and the oldest generation is dropped (O(1) per id, no reordering on a read).
"""

DONE_CACHE = 100_000   # the newest done ids kept in memory at least, twice that at most (20-40 MB);
                       # a service with more done marks in etcd imports none at start (svc.dedup)


class DoneIds:
    """Encoded id (bytes) -> digest (bytes) of the newest ``bound`` done ids at least, ``2 * bound`` at most.

    Not thread-safe beyond what dict operations are under the GIL: written by the worker (its
    own commits and claim answers) and the dedup watch (siblings' done marks), read by the worker.
    """

    def __init__(self, bound: int | None = None) -> None:
        self.bound = max(1, DONE_CACHE if bound is None else bound)
        self._young: dict[bytes, bytes] = {}
        self._old: dict[bytes, bytes] = {}

    def get(self, encoded: bytes, default=None):
        digest = self._young.get(encoded)
        if digest is None:
            digest = self._old.get(encoded, default)
        return digest

    def __contains__(self, encoded: bytes) -> bool:
        return encoded in self._young or encoded in self._old

    def __setitem__(self, encoded: bytes, digest: bytes) -> None:
        young = self._young
        young[encoded] = digest
        if len(young) >= self.bound:
            self._old, self._young = young, {}

    def update(self, pairs) -> None:
        """Add (encoded id, digest) pairs."""
        for encoded, digest in pairs:
            self[encoded] = digest

    def pop(self, encoded: bytes, default=None):
        """Forget ``encoded`` (its done mark is gone from etcd); its digest, or ``default``."""
        young = self._young.pop(encoded, default)
        old = self._old.pop(encoded, default)
        return young if young is not default else old

    def clear(self) -> None:
        self._young, self._old = {}, {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
