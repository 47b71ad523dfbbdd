"""Effects: what processing an event does, written so that a test can count it per event id.

Every processed event leaves one record under ``<prefix>/effects/<service>/<encoded id>/<suffix>``
(an order recorded, a user banned). With deduplication on it is written in the same etcd
transaction as the done mark, so "processed exactly once" is a count of records, not a belief.
"""

import json
import os
import random
import time

from . import keys
from .etcd import Etcd
from .config import DEFAULT_ETCD_PREFIX, parse_endpoints
from .event import Event

ACTIONS = {"new_order": "order recorded", "ban_user": "user banned"}


def effect_key(prefix: str, service: str, event: Event) -> str:
    # A unique suffix per processing: processing the same event twice leaves two records.
    return f"{keys.effects_prefix(prefix, service, event.id)}{suffix()}"


def suffix() -> str:
    """16 random hex digits, new for each processing (a generator seeded from os.urandom when svc
    starts: a system call per event cost more than the rest of the key)."""
    return f"{_random.getrandbits(64):016x}"


def record(service: str, event: Event) -> str:
    """The effect of handling ``event`` in ``service``, as stored (small: the args stay out):
    ``json.dumps`` of {"service", "id", "type", "action", "pid", "at"}, written out here, the same
    text at a third of the cost (it runs per event)."""
    return (f'{{"service": {_string(service)}, "id": {_string(event.id)}, "type": {_string(event.type)}, '
            f'"action": {_string(ACTIONS[event.type])}, "pid": {os.getpid()}, "at": {round(time.time(), 6)!r}}}')


_random = random.Random()   # seeded from os.urandom
_string = json.encoder.encode_basestring_ascii   # a JSON string as json.dumps writes it (ensure_ascii)


def count(client, service: str, event_id: str | None = None, *, prefix: str = DEFAULT_ETCD_PREFIX,
          access=None) -> int:
    """How many times ``service`` processed ``event_id`` (or any event, when None).

    ``client`` is an :class:`svc.Etcd` or an endpoint list such as ``"127.0.0.1:2379"`` (then
    ``access``, a :class:`svc.config.EtcdAccess`, says how to log in to it, if it must).
    """
    with _client(client, access) as etcd:
        return etcd.count_prefix(keys.effects_prefix(prefix, service, event_id))


def counts_by_id(client, service: str, *, prefix: str = DEFAULT_ETCD_PREFIX, access=None) -> dict[str, int]:
    """``{event id: times processed}`` for every event ``service`` processed (ids in NFC)."""
    base = keys.effects_prefix(prefix, service).encode()
    counts: dict[str, int] = {}
    with _client(client, access) as etcd:
        for page in etcd.scan_prefix(base):
            for key, _ in page:
                event_id = keys.decode_id(key[len(base):].split(b"/", 1)[0].decode())
                counts[event_id] = counts.get(event_id, 0) + 1
    return counts


def records(client, service: str, *, prefix: str = DEFAULT_ETCD_PREFIX, access=None) -> list[dict]:
    """Every effect record of ``service`` (id, type, action, pid, and ``at``: when, Unix time)."""
    with _client(client, access) as etcd:
        return [json.loads(value) for page in etcd.scan_prefix(keys.effects_prefix(prefix, service))
                for _, value in page]


class _client:
    """Use a given Etcd as is, or open (and later close) one for an endpoint string."""

    def __init__(self, client, access=None) -> None:
        self._owned = None if isinstance(client, Etcd) else Etcd(parse_endpoints(client), access=access)
        self._etcd = client if self._owned is None else self._owned

    def __enter__(self) -> Etcd:
        return self._etcd

    def __exit__(self, *exc) -> None:
        if self._owned is not None:
            self._owned.close()
