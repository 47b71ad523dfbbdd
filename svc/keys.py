"""etcd key layout: every key of a service lives under its own prefix, whatever the event id.

An id is percent-encoded byte by byte (UTF-8), keeping only ``[A-Za-z0-9_-]``: the encoding is
injective and its output holds no ``/``, ``.``, NUL or other byte that could leave the prefix.
"""

import re
import string

SAFE = frozenset((string.ascii_letters + string.digits + "_-").encode())
_ALL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_BYTE = [chr(b) if b in SAFE else f"%{b:02X}" for b in range(256)]


def encode_id(event_id: str) -> str:
    if _ALL_SAFE.fullmatch(event_id):
        return event_id  # the common case: nothing to escape
    return "".join([_BYTE[b] for b in event_id.encode("utf-8")])


def decode_id(encoded: str) -> str:
    out, i = bytearray(), 0
    while i < len(encoded):
        if encoded[i] == "%":
            out.append(int(encoded[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(encoded[i]))
            i += 1
    return out.decode("utf-8")


def dedup_prefix(prefix: str, service: str) -> str:
    return f"{prefix.rstrip('/')}/dedup/{service}/"


def dedup_key(prefix: str, service: str, event_id: str) -> str:
    return dedup_prefix(prefix, service) + encode_id(event_id)


def effects_prefix(prefix: str, service: str, event_id: str | None = None) -> str:
    base = f"{prefix.rstrip('/')}/effects/{service}/"
    return base if event_id is None else f"{base}{encode_id(event_id)}/"
