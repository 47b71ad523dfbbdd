"""Events: the frozen Event and ``parse(body)``, the one gate every message body passes."""

import dataclasses
import functools
import hashlib
import json
import math
import re
import types

import rfc8785

from . import keys
from .errors import InvalidEvent

EVENT_TYPES = ("new_order", "ban_user")
MAX_BODY_BYTES = 64 * 1024
MAX_ID_BYTES = 256
MAX_DEPTH = 64  # levels of JSON nesting, the event object included: deeper cannot be digested
                # safely (the digest re-encodes args a few stack frames deeper than parse decoded them)


@dataclasses.dataclass(frozen=True)
class Event:
    """A valid event. ``digest`` fingerprints its content: same id + other digest = conflict.
    ``id`` is in Unicode NFC when the event comes from :func:`parse` (svc.keys.normal_id)."""

    type: str
    id: str
    args: types.MappingProxyType = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @functools.cached_property
    def digest(self) -> str:
        """32 hex digits of SHA-256 over the event's RFC 8785 (JSON Canonicalization Scheme) form:
        equal JSON numbers (``1``, ``1.0``, ``1e0``), key order and ``\\u`` escapes give equal digests."""
        return _sha256(canonical({"type": self.type, "id": self.id, "args": dict(self.args)}))

    @functools.cached_property
    def legacy_digest(self) -> str:
        """The digest svc wrote before RFC 8785 (sorted keys, ASCII escapes, ``1.0`` apart from
        ``1``): done marks written then are still this event's, not conflicts."""
        return _sha256(_LEGACY.encode({"type": self.type, "id": self.id, "args": dict(self.args)}).encode())

    @functools.cached_property
    def key(self) -> bytes:
        """The id as etcd's keys hold it (:func:`svc.keys.encode_id`, UTF-8): made once per event,
        however many keys of it a claim, a done mark and an effect record build."""
        return keys.encode_id(self.id).encode()

    def matches(self, digest: str | bytes) -> bool:
        """True if ``digest`` (read from a done mark or a claim) is this event's payload."""
        digest = digest.decode() if isinstance(digest, bytes) else digest
        return digest == self.digest or digest == self.legacy_digest

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "id": self.id, "args": dict(self.args)})


def parse(body: bytes) -> Event:
    """The Event in a message body, or InvalidEvent with a reason fit for a dead letter's header."""
    if not body:
        raise InvalidEvent("empty body")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidEvent(f"body of {len(body)} bytes is over the limit of {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidEvent(f"body is not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _decode(text)
    except json.JSONDecodeError as error:
        raise InvalidEvent(f"body is not JSON ({error.msg} at char {error.pos})") from None
    except RecursionError:
        raise InvalidEvent("body is JSON nested too deeply") from None
    except ValueError as error:  # JSON Python will not read, such as an integer of over 4300 digits
        raise InvalidEvent(f"body is JSON that cannot be read ({str(error).split(':')[0][:120]})") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"event is a JSON {_json_kind(data)}, not an object")
    event = Event(type=_type(data), id=_id(data), args=_args(data, text.count("{") + text.count("[")))
    if _MAYBE_SURROGATE.search(text):
        _no_lone_surrogate(event.args)
    return event


def _type(data: dict) -> str:
    if "type" not in data:
        raise InvalidEvent("event has no type")
    kind = data["type"]
    if not isinstance(kind, str):
        raise InvalidEvent(f"type is a JSON {_json_kind(kind)}, not a string")
    if kind not in EVENT_TYPES:
        raise InvalidEvent(f"unknown type {kind[:64]!r} (known: {', '.join(EVENT_TYPES)})")
    return kind


def _id(data: dict) -> str:
    if "id" not in data:
        raise InvalidEvent("event has no id")
    event_id = data["id"]
    if not isinstance(event_id, str):
        raise InvalidEvent(f"id is a JSON {_json_kind(event_id)}, not a string")
    if not event_id:
        raise InvalidEvent("id is empty")
    try:
        event_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("id holds a lone surrogate (\\ud800-\\udfff), not a character") from None
    # One id, one byte string: NFC and NFD spellings of "café" are the same id (keys.normal_id).
    event_id = keys.normal_id(event_id)
    size = len(event_id.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise InvalidEvent(f"id of {size} bytes is over the limit of {MAX_ID_BYTES}")
    return event_id


def _args(data: dict, brackets: int) -> types.MappingProxyType:
    """``brackets``: how many ``{`` and ``[`` the body holds; a nesting over MAX_DEPTH needs more."""
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise InvalidEvent(f"args is a JSON {_json_kind(args)}, not an object")
    if brackets <= MAX_DEPTH:
        return types.MappingProxyType(args)
    # Iterative, so checking the depth is never what runs out of stack (a loop, not a generator:
    # this runs per event, and flat args are the common case).
    containers = [(args, 2)]
    while containers:
        value, depth = containers.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"body is JSON nested too deeply (over {MAX_DEPTH} levels)")
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, (dict, list)):
                containers.append((child, depth + 1))
    return types.MappingProxyType(args)


def _decode(text: str):
    """``text`` decoded as JSON, refused (InvalidEvent) if an object holds a key twice.

    First by json's C decoder without a hook per object: its result is kept when the top object's
    members and its object values' members add up to the colons in ``text``. Each member written
    in the text has one colon outside strings, and a colon outside strings is nothing else, so
    colons >= members written >= members kept >= those counted: equal counts leave no room for a
    duplicate. Otherwise (a colon in a string, deeper objects, a duplicate, any error) the exact
    decoder decodes it again and says why, as parse always has: an event's flat args pay one
    decode and no call per object."""
    try:
        data = _FAST.decode(text)
    except (ValueError, RecursionError, InvalidEvent):
        pass   # the exact decoder below raises what parse has always raised
    else:
        if type(data) is dict:
            members = len(data)
            for value in data.values():
                if type(value) is dict:
                    members += len(value)
            if members == text.count(":"):
                return data
    return _DECODER.decode(text)


def _no_duplicate_keys(pairs: list) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise InvalidEvent(f"key {duplicate[:64]!r} appears twice in one object")
    return data


def _no_constant(name: str):
    raise InvalidEvent(f"body holds {name}, which is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # 1e999: JSON allows it, an IEEE 754 double (RFC 8785 3.2.2.3) does not
        raise InvalidEvent(f"number {text[:32]} is too large for a double (limit about 1.8e308)")
    return number


def _no_lone_surrogate(args) -> None:
    """RFC 8785 (3.2.2.2) canonicalizes I-JSON (RFC 7493 2.1): no unpaired surrogate in a string."""
    try:
        json.dumps(dict(args), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("args hold a lone surrogate (\\ud800-\\udfff), not a character") from None


# -- the canonical form of the digest --------------------------------------------------------------

SAFE_INTEGER = 2 ** 53 - 1  # RFC 8785 3.2.2.3 / I-JSON: integers a double holds exactly


def canonical(value) -> bytes:
    """``value`` (parsed JSON) as RFC 8785 canonical UTF-8 bytes, via the ``rfc8785`` package.

    JCS reads every number as an IEEE 754 double. An integer beyond 2**53 that a double holds
    exactly (``10**20``) is canonicalized as that double, so it equals ``1e20``; one a double cannot
    hold is outside JCS's domain: rather than round it (two payloads would share a digest), it is
    written as its digits in a string, and the JSON pointers of such integers are appended after a
    NUL, so it never equals the string of the same digits.
    """
    if _plain(value):
        try:
            return _PLAIN.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 says why it refuses it
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        exact: list[str] = []
        text = rfc8785.dumps(_wide_integers(value, "", exact))
        return text + b"\0" + rfc8785.dumps(exact) if exact else text


def _wide_integers(value, pointer: str, exact: list[str]):
    """A copy of ``value`` fit for rfc8785: integers beyond the safe range as doubles when exact,
    else as digit strings whose JSON pointers (RFC 6901) are added to ``exact``. Depth is bounded
    by MAX_DEPTH, so the recursion is too."""
    if isinstance(value, dict):
        return {key: _wide_integers(item, f"{pointer}/{_escape(key)}", exact) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide_integers(item, f"{pointer}/{i}", exact) for i, item in enumerate(value)]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > SAFE_INTEGER:
        try:
            if float(value) == value:
                return float(value)
        except OverflowError:
            pass
        exact.append(pointer)
        return str(value)
    return value


def _plain(value) -> bool:
    """True if ``value`` holds only objects with ASCII keys, arrays, strings, booleans, null and
    integers a double holds exactly: there RFC 8785's form is ``json``'s sorted, compact form with
    raw UTF-8 (the same escapes of ``"``, ``\\`` and U+0000-U+001F, ASCII keys sort alike by code
    point and by UTF-16 unit), made in C instead of rfc8785's Python (a third of a claim's cost).
    Floats are left to rfc8785 (``1.0`` is ``1`` there). Iterative: depth is bounded by MAX_DEPTH."""
    items = [value]
    while items:
        item = items.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                if type(child) is str:   # the common value, judged here (a digest is made per event)
                    continue
                items.append(child)
        elif kind is list:
            items.extend(item)
        elif kind is int:
            if not -SAFE_INTEGER <= item <= SAFE_INTEGER:
                return False
        elif kind is not str and kind is not bool and item is not None:
            return False
    return True


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# Built once (json.loads and json.dumps with options build a new one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant,
                            parse_float=_finite_float)
_FAST = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)   # see _decode
_LEGACY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_PLAIN = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)  # see _plain
# A \\u escape of a surrogate (D800-DFFF): only bodies with one need the exact (slower) check.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_kind(value) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)
