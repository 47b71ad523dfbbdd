"""Effects: what processing an event does, written so that a test can count it per event id.

Every processing of an event leaves a record (an order recorded, a user banned), in one of two
shapes, both read by :func:`count`, :func:`counts_by_id` and :func:`records`:

- a *window record* (what svc writes): one key per commit transaction,
  ``<prefix>/effects/<service>/~windows/<suffix>``, for every event that transaction committed;
  its value (:func:`window_record`) is a JSON line ``{"service", "pid", "at"}`` and then a line
  ``<type> <encoded id>`` per event. With deduplication on it is written in the transaction that
  writes those events' done marks, guarded by "every claim is still mine": all or nothing. One
  put per window, not per event: an etcd put cost ~12 us of etcd's CPU (issue 24);
- an *event record* ``<prefix>/effects/<service>/<encoded id>/<suffix>`` (:func:`record`, JSON):
  what svc wrote before, and still writes, one per event beside its done mark, when a window's
  guard fails and its events are committed one by one.

The suffix is new for each write, so processing an event twice leaves two lines or keys:
"processed exactly once" is a count, not a belief. ``~`` is outside the id encoding
(svc/keys.py): no id's records mix with the window records, which sort after them.
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


WINDOWS = "~windows/"   # under effects_prefix: the window records


def window_key(prefix: str, service: str) -> str:
    """A new key for a window record of ``service``."""
    return f"{keys.effects_prefix(prefix, service)}{WINDOWS}{suffix()}"


def window_record(service: str, events) -> bytes:
    """The window record of ``events`` (svc.event.Event) processed now in ``service``: the line
    ``{"service", "pid", "at"}`` (JSON, ``at`` in Unix seconds) and a line ``<type> <encoded id>``
    (svc.keys.encode_id) per event, in order; read back by :func:`window_records`."""
    head = f'{{"service": {_string(service)}, "pid": {os.getpid()}, "at": {round(time.time(), 6)!r}}}'.encode()
    types = _TYPES
    return b"\n".join([head, *[types[event.type] + event.key for event in events]])


def window_records(value: bytes) -> list[dict]:
    """The records (as :func:`records` gives them) a window record holds, one per event."""
    head, *lines = value.split(b"\n")
    common = json.loads(head)
    out = []
    for line in lines:
        kind, encoded = line.decode().split(" ", 1)
        out.append({"service": common["service"], "id": keys.decode_id(encoded), "type": kind,
                    "action": ACTIONS.get(kind, ""), "pid": common["pid"], "at": common["at"]})
    return out


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


_TYPES = {kind: f"{kind} ".encode() for kind in ACTIONS}   # a window record line's start, made once
_random = random.Random()   # seeded from os.urandom
_string = json.encoder.encode_basestring_ascii   # a JSON string as json.dumps writes it (ensure_ascii)


def count(client, service: str, event_id: str | None = None, *, prefix: str = DEFAULT_ETCD_PREFIX,
          access=None) -> int:
    """How many times ``service`` processed ``event_id`` (or any event, when None): its event
    records and its lines in the window records.

    ``client`` is an :class:`svc.Etcd` or an endpoint list such as ``"127.0.0.1:2379"`` (then
    ``access``, a :class:`svc.config.EtcdAccess`, says how to log in to it, if it must).
    Raises svc.DedupUnavailable if etcd does not answer.
    """
    windows = keys.effects_prefix(prefix, service) + WINDOWS
    with _client(client, access) as etcd:
        if event_id is None:
            base = keys.effects_prefix(prefix, service)
            lines = sum(value.count(b"\n") for page in etcd.scan_prefix(windows) for _, value in page)
            return etcd.count_prefix(base) - etcd.count_prefix(windows) + lines
        encoded = keys.encode_id(event_id).encode()
        lines = sum(1 for page in etcd.scan_prefix(windows) for _, value in page
                    for line in value.split(b"\n")[1:] if line.split(b" ", 1)[1] == encoded)
        return etcd.count_prefix(keys.effects_prefix(prefix, service, event_id)) + lines


def counts_by_id(client, service: str, *, prefix: str = DEFAULT_ETCD_PREFIX, access=None) -> dict[str, int]:
    """``{event id: times processed}`` for every event ``service`` processed (ids in NFC)."""
    base = keys.effects_prefix(prefix, service).encode()
    windows = base + WINDOWS.encode()
    counts: dict[str, int] = {}
    with _client(client, access) as etcd:
        for page in etcd.scan_prefix(base):
            for key, value in page:
                if key.startswith(windows):
                    encoded_ids = [line.split(b" ", 1)[1] for line in value.split(b"\n")[1:]]
                else:
                    encoded_ids = [key[len(base):].split(b"/", 1)[0]]
                for encoded in encoded_ids:
                    event_id = keys.decode_id(encoded.decode())
                    counts[event_id] = counts.get(event_id, 0) + 1
    return counts


def records(client, service: str, *, prefix: str = DEFAULT_ETCD_PREFIX, access=None) -> list[dict]:
    """Every effect record of ``service`` (service, id, type, action, pid, and ``at``: when, Unix
    time), one per processing: the event records, then each window record's events in order."""
    base = keys.effects_prefix(prefix, service).encode()
    windows = base + WINDOWS.encode()
    with _client(client, access) as etcd:
        return [record for page in etcd.scan_prefix(base) for key, value in page
                for record in (window_records(value) if key.startswith(windows) else [json.loads(value)])]


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
