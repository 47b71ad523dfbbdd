"""The talk's original deduplication, reproduced to be measured (``ENABLE_ETCD=true DEDUP_MODE=talk``).

The service shown in the talk kept its seen ids in a process-local set:

- checked *before* the work: an id in the set is skipped;
- added *after* the work;
- written to etcd once a second by a background thread (the ids added since the last flush);
- imported from etcd at start.

There are no claims and no payload digests. It shows the idea, and it leaves two windows open
that :class:`svc.dedup.EtcdDedup` (the default, ``DEDUP_MODE=claims``) closes:

- two replicas each check their *own* set, so copies delivered to both at once are both processed;
- an id processed but not yet flushed is forgotten by a crash (SIGKILL), so the redelivery of the
  unacknowledged event is processed again by the next process, which imported the old set.

Chapter 06 counts those double effects side by side with the claims' zero. Keys:
``<prefix>/talk/<service>/<encoded id>`` = ``seen``, apart from the claims' keys.
"""

import logging
import threading

from . import etcd as _etcd, keys
from .batch import InFlight, Ready
from .nodedup import NoDedup
from .errors import DedupUnavailable, EtcdRefused
from .protocols import Verdict
from .event import Event

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0   # seconds between flushes of new ids to etcd, as in the talk's service
FLUSH_PUTS = 100       # puts per flush transaction: etcd's default --max-txn-ops is 128
SEEN = b"seen"


def talk_prefix(prefix: str, service: str) -> str:
    """Where the talk's design keeps a service's seen ids: ``<prefix>/talk/<service>/``."""
    return f"{prefix.rstrip('/')}/talk/{service}/"


class _AddAfter:
    """The commit's InFlight; once its effects are written, their ids join the local set."""

    def __init__(self, dedup: "TalkDedup", events: list[Event], effects: InFlight) -> None:
        self.dedup, self.events, self.effects = dedup, events, effects

    def result(self) -> list[Verdict]:
        verdicts = self.effects.result()
        self.dedup._add([event.id for event, verdict in zip(self.events, verdicts, strict=True) if verdict is Verdict.OK])
        return verdicts


class TalkDedup:
    """A process-local set of seen ids, flushed to etcd every ``flush_interval`` seconds.

    ``open()`` imports the set (raises DedupUnavailable while etcd is away: the caller retries);
    ``close()`` stops the flusher after a last flush (a graceful stop; a SIGKILL gets none).
    While etcd is away after the start, events are still processed and the unflushed ids wait:
    the talk's service did not fail closed.
    """

    enabled = True
    claim_ttl = 0   # no claims: nothing is ever held

    def __init__(self, etcd: _etcd.Etcd, prefix: str, service: str, *,
                 flush_interval: float = FLUSH_INTERVAL) -> None:
        self.etcd, self.prefix, self.service = etcd, prefix, service
        self.effects = NoDedup(etcd, prefix, service)  # the effects are written as without dedup
        self.on_release = None   # no claims: nothing is ever held
        self.flush_interval = flush_interval
        self.key_prefix = talk_prefix(prefix, service).encode()
        self.seen: set[str] = set()
        self._unflushed: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def open(self) -> None:
        skip, seen = len(self.key_prefix), set()
        for page in self.etcd.scan_prefix(self.key_prefix):
            seen.update(keys.decode_id(key[skip:].decode()) for key, _ in page)
        self.seen = seen
        log.info("imported %d seen ids of %s from etcd (the talk's design: no claims)", len(seen), self.service)
        self._flusher = threading.Thread(target=self._keep_flushing, name=f"{self.service}-talk-flush", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2 * self.flush_interval + self.etcd.timeout)
        try:
            self.flush()
        except (DedupUnavailable, EtcdRefused) as error:
            log.warning("last flush of %d seen ids failed: %s", len(self._unflushed), error)

    def claim(self, events: list[Event]) -> Ready:
        """Checked before the work: a seen id is skipped, any other is processed (nobody else is asked)."""
        return Ready([Verdict.SKIPPED if event.id in self.seen else Verdict.CLAIMED for event in events])

    def commit(self, events: list[Event]) -> _AddAfter:
        """The effects (as without dedup); the ids join the set once they are written."""
        return _AddAfter(self, events, self.effects.commit(events))

    def release(self, events: list[Event]) -> None:
        """No claims: nothing to release."""

    def abandon(self) -> None:
        """No claims: nothing to let go of."""

    def claim_key(self, event: Event) -> bytes:
        """Where the id is kept once flushed (never asked: without claims nothing is held)."""
        return self.key_prefix + keys.encode_id(event.id).encode()

    def _add(self, ids: list[str]) -> None:
        with self._lock:
            self.seen.update(ids)
            self._unflushed.extend(ids)

    def flush(self) -> int:
        """Write the ids added since the last flush to etcd; how many. On DedupUnavailable they
        stay for the next flush."""
        with self._lock:
            ids, self._unflushed = self._unflushed, []
        try:
            for start in range(0, len(ids), FLUSH_PUTS):
                request = _etcd.new_txn()
                for event_id in ids[start:start + FLUSH_PUTS]:
                    _etcd.add_put(request.success, self.key_prefix + keys.encode_id(event_id).encode(), SEEN)
                self.etcd.txn(request)
        except DedupUnavailable:
            with self._lock:
                self._unflushed[:0] = ids[start:]
            raise
        return len(ids)

    def _keep_flushing(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except DedupUnavailable as error:
                log.debug("flush: %s", error)
            except EtcdRefused as error:  # refused after the start (a role revoked): said, kept for later
                log.error("flush: %s", error)
