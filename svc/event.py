"""Events: the frozen Event and ``parse(body)``, the one gate every message body passes."""

import dataclasses
import functools
import hashlib
import json
import types

from .errors import InvalidEvent

EVENT_TYPES = ("new_order", "ban_user")
MAX_BODY_BYTES = 64 * 1024
MAX_ID_BYTES = 256
MAX_DEPTH = 64  # levels of JSON nesting, the event object included: deeper cannot be digested
                # safely (the digest re-encodes args a few stack frames deeper than parse decoded them)


@dataclasses.dataclass(frozen=True)
class Event:
    """A valid event. ``digest`` fingerprints its content: same id + other digest = conflict."""

    type: str
    id: str
    args: types.MappingProxyType = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @functools.cached_property
    def digest(self) -> str:
        canonical = _CANONICAL.encode({"type": self.type, "id": self.id, "args": dict(self.args)})
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

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
        data = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise InvalidEvent(f"body is not JSON ({error.msg} at char {error.pos})") from None
    except RecursionError:
        raise InvalidEvent("body is JSON nested too deeply") from None
    except ValueError as error:  # JSON Python will not read, such as an integer of over 4300 digits
        raise InvalidEvent(f"body is JSON that cannot be read ({str(error).split(':')[0][:120]})") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"event is a JSON {_json_kind(data)}, not an object")
    return Event(type=_type(data), id=_id(data), args=_args(data))


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
        size = len(event_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent("id holds a lone surrogate (\\ud800-\\udfff), not a character") from None
    if size > MAX_ID_BYTES:
        raise InvalidEvent(f"id of {size} bytes is over the limit of {MAX_ID_BYTES}")
    return event_id


def _args(data: dict) -> types.MappingProxyType:
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise InvalidEvent(f"args is a JSON {_json_kind(args)}, not an object")
    # Iterative, so checking the depth is never what runs out of stack.
    containers = [(args, 2)]
    while containers:
        value, depth = containers.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent(f"body is JSON nested too deeply (over {MAX_DEPTH} levels)")
        children = value.values() if isinstance(value, dict) else value
        containers.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return types.MappingProxyType(args)


def _no_duplicate_keys(pairs: list) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise InvalidEvent(f"key {duplicate[:64]!r} appears twice in one object")
    return data


def _no_constant(name: str):
    raise InvalidEvent(f"body holds {name}, which is not JSON")


# Built once (json.loads and json.dumps with options build a new one per call); the digest's
# canonical form must never change, or done marks already in etcd would turn into conflicts.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _json_kind(value) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)
