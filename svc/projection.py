"""A read model built from the log: the orders per sku and per customer, versioned in etcd.

Keys of a service reading the log (``svc/replay.py``), under ``<prefix>/replay/<service>/``:

- ``current``: the version in use (``"1"``, ``"2"``...), switched in one put when a rebuild is done;
- ``v<N>/tracking``: the tracking record, the offset of the last event of the log version N applied
  (written in the same etcd transaction as the effects, never apart);
- ``v<N>/windows/<offset, 20 digits>``: the *done record* of the window whose last event is at that
  offset, put in its commit: the ids it applied (deduplication by id: the log keeps every copy a
  publisher sent), JSON ``{encoded id: done value}`` (:func:`done_record`), the value what the
  payload is compared by (:func:`done_value`: ``=`` and the body itself when small, else the event's
  digest). It is the effect record too: an id in two records was applied twice. One put per window
  rather than per id: etcd's CPU per event was more than the reader's own;
- ``v<N>/done/<encoded id>``: the same, one key per id, as versions before wrote it (read still;
  its etcd version counts the applications);
- ``v<N>/effects/<encoded id>/<token><count>``: without dedup by id, one record per application,
  its value the offset it was applied from (so "applied twice" is a count there too);
- ``snapshot/<offset>/...``: a copy of a version's done ids, view and tracking record at an offset,
  ``snapshot/latest`` the offset of the latest (a rebuild starts from it once retention has dropped
  the events before it);
- ``v<N>/view/sku/<encoded sku>`` ``{"orders": n, "qty": q}`` and ``v<N>/view/customer/<encoded
  customer>`` ``{"orders": n}``: the read model.

A version's digest is SHA-256 over the RFC 8785 JSON of ``{view key (decoded, below view/): value}``,
so two builds with equal content have equal digests whatever the order they were written in.
"""

import functools
import hashlib
import json

import rfc8785

from . import keys
from .errors import InvalidEvent
from .event import Event, parse

VIEW = "view/"
RAW = b"="             # a done mark's value that is the event's body itself (not a digest)
MAX_RAW_BODY = 512     # bytes: a longer body's done mark holds its digest (32 hex digits) instead


def replay_prefix(prefix: str, service: str) -> str:
    return f"{prefix.rstrip('/')}/replay/{service}/"


def current_key(prefix: str, service: str) -> str:
    """The key holding the version in use."""
    return replay_prefix(prefix, service) + "current"


def version_prefix(prefix: str, service: str, version: int) -> str:
    return f"{replay_prefix(prefix, service)}v{version}/"


def snapshot_prefix(prefix: str, service: str, offset: int | None = None) -> str:
    """Where snapshots live: ``snapshot/<offset>/`` (a version's done ids, view and tracking record
    at that offset) and ``snapshot/latest`` (the offset of the latest whole one)."""
    base = replay_prefix(prefix, service) + "snapshot/"
    return base if offset is None else f"{base}{offset}/"


def tracking_key(prefix: str, service: str, version: int) -> str:
    """The tracking record of one version: the offset of the last event applied."""
    return version_prefix(prefix, service, version) + "tracking"


# Old event shapes, upgraded on read ("upcasting"): an older producer wrote ``item`` for ``sku``,
# ``customer_id`` for ``customer``, and no ``qty`` (one item per order).
RENAMED = {"item": "sku", "customer_id": "customer"}
_OLD_NAME = {new: old for old, new in RENAMED.items()}


def upcast(args: dict) -> dict:
    """``new_order`` args in today's shape: renamed fields under their new names, ``qty`` 1 when
    missing. An event already in today's shape is returned equal."""
    args = dict(args)
    for old, new in RENAMED.items():
        if old in args and new not in args:
            args[new] = args.pop(old)
    args.setdefault("qty", 1)
    return args


def apply(view: dict[str, dict], event: Event, base: dict[str, dict] | None = None) -> list[str]:
    """Apply ``event`` to ``view`` (``{view key: value}``, changed in place); the keys changed.
    A key missing from ``view`` starts from a copy of its value in ``base`` (the state the changes
    build on), else from zero. Only ``new_order`` changes the view, its args read as :func:`upcast`
    makes them: a missing sku or customer counts under ``"?"``, a qty that is not a whole number
    counts as 1."""
    if event.type != "new_order":
        return []
    args = event.args   # read as upcast() writes them, without a copy per event (the replay's hot path)
    qty = args.get("qty", 1)
    if not isinstance(qty, int) or isinstance(qty, bool):
        qty = 1
    sku_key = _view_key("sku/", str(_field(args, "sku")))
    customer_key = _view_key("customer/", str(_field(args, "customer")))
    sku = view.get(sku_key)
    if sku is None:
        sku = view[sku_key] = dict(base[sku_key]) if base and sku_key in base else {"orders": 0, "qty": 0}
    sku["orders"] += 1
    sku["qty"] += qty
    customer = view.get(customer_key)
    if customer is None:
        customer = view[customer_key] = dict(base[customer_key]) if base and customer_key in base else {"orders": 0}
    customer["orders"] += 1
    return [sku_key, customer_key]


def _field(args, name: str):
    """``args[name]`` as upcast() reads it: under its old name (RENAMED) if missing, else ``"?"``."""
    return args[name] if name in args else args.get(_OLD_NAME[name], "?")


@functools.lru_cache(maxsize=1 << 16)
def _view_key(kind: str, value: str) -> str:
    return kind + keys.encode_id(value or "?")


WINDOWS = "windows/"
DONE = "done/"   # one key per id (written before the done records)
_RECORD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
RECORD_PAGE = 16   # done records per etcd read (each up to about 1 MiB: under gRPC's receive limit)


def done_record_key(base: str, offset: int) -> bytes:
    """The key of the done record of a window whose last event is at ``offset``, under ``base``
    (:func:`version_prefix`); zero-padded so the records sort by offset."""
    return f"{base}{WINDOWS}{offset:020d}".encode()


def done_record(done: dict[bytes, bytes]) -> bytes:
    """A window's done record: ``done`` (``{encoded id: done_value}``, ids from svc.keys.encode_id)
    as UTF-8 JSON. Values are UTF-8: a body svc.event.parse read, or a digest."""
    return _RECORD.encode({key.decode(): value.decode() for key, value in done.items()}).encode()


def read_done(etcd, prefix: str, service: str, version: int) -> dict[bytes, bytes]:
    """Every id ``version`` applied, ``{encoded id: done_value}``: its done records' and the done
    marks of one key per id that versions before wrote."""
    base = version_prefix(prefix, service, version)
    legacy = (base + DONE).encode()
    done = {key[len(legacy):]: value for page in etcd.scan_prefix(legacy) for key, value in page}
    for page in etcd.scan_prefix((base + WINDOWS).encode(), page=RECORD_PAGE):
        for _key, value in page:
            done.update((key.encode(), kept.encode()) for key, kept in json.loads(value).items())
    return done


def done_value(event: Event, body: bytes) -> bytes:
    """The value of ``event``'s done mark, read from ``body``: ``=`` and the body itself when it is at
    most MAX_RAW_BODY bytes (no digest computed: a copy is nearly always the same bytes), else the
    event's digest (svc.event.Event.digest). Compared by :func:`same_payload`."""
    return RAW + body if len(body) <= MAX_RAW_BODY else event.digest.encode()


def same_payload(value: bytes, event: Event, body: bytes) -> bool:
    """True if done mark ``value`` (:func:`done_value`, or a digest as versions before kept) was
    written for ``event``'s payload (``body`` its message body): the same bytes, else the same
    RFC 8785 digest (so key order, spaces and escapes do not make a copy a conflict)."""
    if value[:1] != RAW:
        return event.matches(value)
    kept = value[1:]
    if kept == body:
        return True
    try:
        return parse(kept).digest == event.digest
    except InvalidEvent:
        return False


def digest(view: dict[str, dict]) -> str:
    """64 hex digits: SHA-256 of the RFC 8785 JSON of the view (keys below ``view/``)."""
    return hashlib.sha256(rfc8785.dumps(view)).hexdigest()


def build(events) -> dict[str, dict]:
    """The view of ``events`` (an iterable of Event) applied in order, each id once (its first copy):
    what a version must hold once it has read them. Tests compute the expected digest with it."""
    view: dict[str, dict] = {}
    seen = set()
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            apply(view, event)
    return view


def view_of(bodies: list[bytes]) -> dict[str, dict]:
    """The view a reader must build from ``bodies`` (published in this order): each event's first
    copy applied, old shapes upcast, what is not an event left out (it is dead-lettered)."""
    events = []
    for body in bodies:
        try:
            events.append(parse(body))
        except InvalidEvent:
            pass
    return build(events)


def digest_of(bodies: list[bytes]) -> str:
    """The digest (:func:`digest`) of the view a reader must build from ``bodies``."""
    return digest(view_of(bodies))


def read_view(etcd, prefix: str, service: str, version: int) -> dict[str, dict]:
    """The view of ``version`` as stored in etcd (``etcd`` an :class:`svc.Etcd`)."""
    base = (version_prefix(prefix, service, version) + VIEW).encode()
    return {key[len(base):].decode(): json.loads(value)
            for page in etcd.scan_prefix(base) for key, value in page}


def read_current(etcd, prefix: str, service: str) -> int | None:
    """The version in use, or None before any."""
    value = etcd.get(current_key(prefix, service).encode())
    return int(value) if value else None


def read_tracking(etcd, prefix: str, service: str, version: int) -> int | None:
    """The offset of the last event ``version`` applied, or None before any."""
    value = etcd.get(tracking_key(prefix, service, version).encode())
    return int(value) if value else None


def versions(etcd, prefix: str, service: str) -> list[int]:
    """Every version that has a tracking record, ascending."""
    base = replay_prefix(prefix, service).encode()
    found = set()
    for page in etcd.scan_prefix(base):
        for key, _ in page:
            head = key[len(base):].split(b"/", 1)[0]
            if head.startswith(b"v") and head[1:].isdigit():
                found.add(int(head[1:]))
    return sorted(found)


def applied_twice(etcd, prefix: str, service: str, version: int) -> int:
    """How many events of ``version`` were applied more than once (0 unless something went wrong):
    with dedup by id, the ids in more than one done record or done mark, or in a record or mark put
    more than once (its etcd ``version``); without, the events with more than one effect record."""
    from . import etcd as _etcd   # the key's version is not in scan_prefix's pages
    base = version_prefix(prefix, service, version)
    applications: dict[bytes, int] = {}
    for kind in (DONE, WINDOWS):
        start = under = (base + kind).encode()
        end = _etcd.prefix_end(start)
        while True:
            request = _etcd._rpc().RangeRequest(key=start, range_end=end, limit=RECORD_PAGE if kind == WINDOWS else 5000,
                                                keys_only=kind == DONE)
            reply = etcd._call("range", "kvstub", "Range", request)
            for kv in reply.kvs:
                ids = [kv.key[len(under):]] if kind == DONE else [key.encode() for key in json.loads(kv.value)]
                for event in ids:
                    applications[event] = applications.get(event, 0) + kv.version
            if not reply.more or not reply.kvs:
                break
            start = reply.kvs[-1].key + b"\0"
    twice = sum(1 for n in applications.values() if n > 1)
    effects = (base + "effects/").encode()
    counts: dict[bytes, int] = {}
    for page in etcd.scan_prefix(effects):
        for key, _ in page:
            event = key[len(effects):].split(b"/", 1)[0]
            counts[event] = counts.get(event, 0) + 1
    return twice + sum(1 for n in counts.values() if n > 1)
