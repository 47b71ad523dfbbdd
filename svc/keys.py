"""etcd key layout: every key of a service lives under its own prefix, whatever the event id.

An id is compared, keyed and recorded in Unicode Normalization Form C (:func:`normal_id`), then
percent-encoded byte by byte (UTF-8), keeping only ``[A-Za-z0-9_-]``: the encoding is injective
and its output holds no ``/``, ``.``, NUL or other byte that could leave the prefix.
"""

import re
import string
import unicodedata

SAFE = frozenset((string.ascii_letters + string.digits + "_-").encode())
_ALL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_BYTE = [chr(b) if b in SAFE else f"%{b:02X}" for b in range(256)]


def normal_id(event_id: str) -> str:
    """``event_id`` as svc compares, keys and records it: in Unicode Normalization Form C (NFC).

    ``"caf\u00e9"`` (NFC, one code point for é) and ``"cafe\u0301"`` (NFD, e and a combining acute,
    what a macOS file name or another keyboard gives) are one id, as identifiers are compared in the
    field (the PRECIS framework, RFC 8264, and its identifier profiles in RFC 8265 normalize to NFC;
    RFC 5198 asks NFC of text on the wire). Payloads are not normalized: RFC 8785 writes their
    strings code point by code point, so a payload is byte-exact. An ASCII id is its own NFC form
    (the common case costs one check)."""
    if event_id.isascii():
        return event_id
    return unicodedata.normalize("NFC", event_id)


def encode_id(event_id: str) -> str:
    """The key segment of ``event_id`` (NFC first, see :func:`normal_id`): UTF-8 bytes, every byte
    outside ``[A-Za-z0-9_-]`` written ``%XX``."""
    if _ALL_SAFE.fullmatch(event_id):
        return event_id  # the common case: nothing to escape
    return "".join([_BYTE[b] for b in normal_id(event_id).encode("utf-8")])


def decode_id(encoded: str) -> str:
    """The id a key segment of :func:`encode_id` holds (in NFC)."""
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
