"""The done ids a deduplicating service learns from etcd: the import at start, then the watch.

Mixed into EtcdDedup (svc/dedup.py). The import reads the service's done marks into the bounded
cache (svc/done.py) if they fit it; the watch of the service's dedup prefix follows on from that
revision, so replicas learn each other's work: a sibling's done mark goes into the cache and
releases the copies held for its claim (``on_release``, svc/held.py); a deleted key (a claim
released or expired, a done mark past its retention) leaves the cache and releases them too.

Most puts the watch streams back are this replica's own, a claim and a done mark per event: the
claims are skipped, and so is a done mark on a key we still hold a claim on (ours: the watch often
sees it before the worker reads the commit's answer) or that the cache already holds with the same
digest (our commit's, or learnt from a claim's answer). The copies held for those are released
where they are learnt (EtcdDedup._released): the watch costs a lookup per put of ours, never a
release, and it still sees every put and delete (no filter: a sibling's done mark is a put).
"""

import logging
import threading
import time

from . import etcd as _etcd
from .backoff import Backoff
from .done import DoneIds
from .errors import DedupUnavailable, EtcdRefused

log = logging.getLogger("svc.dedup")

IMPORT_PAGE = 5000         # done ids per range request at start (etcd counts the rest each page: not smaller)


class Follow:
    """The import and the watch of EtcdDedup (svc/dedup.py): uses its ``etcd``, ``key_prefix``,
    ``service``, ``done``, ``on_release``, ``_claimed``, ``_stop``, ``_watch`` and ``_marks``."""

    def _import(self) -> int:
        """Read every done id of this service into ``done`` if they fit it, else none (etcd's
        count alone); the revision read at."""
        started = time.monotonic()
        self._marks, revision = self.etcd.count_prefix_at(self.key_prefix)
        if self._marks > self.done.bound:
            log.info("imported none of the %d done ids and claims of %s in etcd, more than the %d kept in memory: a "
                     "repeat is found by its claim (revision %d, %.2f s)", self._marks, self.service,
                     self.done.bound, revision, time.monotonic() - started)
            self.done.clear()
            return revision
        pages = self.etcd.scan_prefix(self.key_prefix, IMPORT_PAGE)
        skip, done = len(self.key_prefix), DoneIds(self.done.bound)
        try:
            while True:
                done.update((key[skip:], value[5:]) for key, value in next(pages) if value.startswith(b"done "))
        except StopIteration as end:
            self.done = done
            log.info("imported %d done ids of %s from etcd in %.2f s (revision %d)",
                     len(done), self.service, time.monotonic() - started, end.value)
            return end.value

    def _follow(self, revision: int | None, imported: threading.Event) -> None:
        """Import the done ids (``revision`` None: again after a compaction), set ``imported``, then
        learn siblings' done marks (and expiries) from the watch from there; resume after a break."""
        waits = Backoff()
        while not self._stop.is_set():
            try:
                if revision is None:
                    revision = self._import() + 1
                    imported.set()
                self._watch = self.etcd.watch_prefix(self.key_prefix, revision)
                for is_put, key, value, mod_revision in self._watch:
                    self._learn(is_put, key, value)
                    revision = mod_revision + 1
                    waits.reset()
            except _etcd.Compacted as error:
                log.info("%s; reading the done ids again", error)
                revision = None
            except DedupUnavailable as error:
                log.debug("dedup watch: %s", error)
            except EtcdRefused as error:  # refused after the start (a role revoked): said, retried slowly
                log.error("dedup watch: %s", error)
                waits.slowest()
            if self._watch is not None:
                self._watch.cancel()  # end the broken stream before a new one starts
            self._stop.wait(waits.next())

    def _learn(self, is_put: bool, key: bytes, value: bytes) -> None:
        if is_put and not value.startswith(b"done "):
            return   # a claim: nothing ended
        encoded = key[len(self.key_prefix):]
        if not is_put:
            self.done.pop(encoded, None)
        elif key in self._claimed or self.done.get(encoded) == value[5:]:
            return   # ours (its commit's answer not read yet, or read), or learnt from a claim's answer
        else:
            self.done[encoded] = value[5:]
        if self.on_release is not None:
            self.on_release(key)  # a claim ended: events held for it may be tried again
