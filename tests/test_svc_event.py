"""Event parsing and id encoding: pure logic, no services."""

import json

import pytest

from svc import keys
from svc.errors import InvalidEvent
from svc.event import MAX_BODY_BYTES, MAX_DEPTH, MAX_ID_BYTES, parse

# (name, body, words the reason must contain): every kind of bad input the consumer must survive.
BAD_INPUT = [
    ("empty", b"", "empty body"),
    ("oversized body", b'{"type":"new_order","id":"1","args":{"x":"' + b"a" * MAX_BODY_BYTES + b'"}}', "over the limit"),
    ("not utf-8", b'{"type":"new_order","id":"\xff"}', "not UTF-8"),
    ("latin-1 text", "{\"id\": \"caf\xe9\"}".encode("latin-1"), "not UTF-8"),
    ("not json", b"hello", "not JSON"),
    ("truncated json", b'{"type":"new_order","id":', "not JSON"),
    ("utf-8 bom", b'\xef\xbb\xbf{"type":"new_order","id":"1"}', "not JSON"),
    ("json array", b'[{"type":"new_order","id":"1"}]', "array, not an object"),
    ("json string", b'"new_order"', "string, not an object"),
    ("json number", b"123", "number, not an object"),
    ("json null", b"null", "null, not an object"),
    ("NaN", b'{"type":"new_order","id":"1","args":{"x":NaN}}', "NaN"),
    ("nested too deep", b"[" * 50000, "nested too deeply"),
    ("args nested 100 deep", b'{"type":"new_order","id":"deep","args":{"a":' + b"[" * 100 + b"]" * 100 + b"}}",
     "nested too deeply"),
    ("args nested 990 deep", b'{"type":"new_order","id":"deeper","args":{"a":' + b"[" * 990 + b"]" * 990 + b"}}",
     "nested too deeply"),
    ("number of 5001 digits", b'{"type":"new_order","id":"big","args":{"n":1' + b"0" * 5000 + b"}}", "4300 digits"),
    ("duplicate key", b'{"type":"new_order","id":"1","id":"2"}', "appears twice"),
    ("duplicate key in args", b'{"type":"new_order","id":"1","args":{"sku":"a","sku":"b"}}', "appears twice"),
    ("duplicate key escaped", b'{"type":"new_order","i\\u0064":"1","id":"2"}', "appears twice"),
    ("duplicate key, a colon in a string", b'{"type":"new_order","id":"1:2","args":{"t":"12:00","t":"13:00"}}',
     "appears twice"),
    ("duplicate key two levels down", b'{"type":"new_order","id":"1","args":{"a":{"b":1,"b":2}}}', "appears twice"),
    ("duplicate key in an array", b'{"type":"new_order","id":"1","args":{"a":[{"b":1,"b":2}]}}', "appears twice"),
    ("duplicate key and a colon short", b'{"type":"new_order","id":"1","args":{"a":1,"a":2,"b:":3}}', "appears twice"),
    ("no id", b'{"type":"new_order"}', "no id"),
    ("id null", b'{"type":"new_order","id":null}', "id is a JSON null"),
    ("id number", b'{"type":"new_order","id":123}', "id is a JSON number"),
    ("id object", b'{"type":"new_order","id":{"a":1}}', "id is a JSON object"),
    ("id empty", b'{"type":"new_order","id":""}', "id is empty"),
    ("id oversized", json.dumps({"type": "new_order", "id": "x" * (MAX_ID_BYTES + 1)}).encode(), "over the limit"),
    ("id lone surrogate", b'{"type":"new_order","id":"\\ud800"}', "lone surrogate"),
    ("no type", b'{"id":"1"}', "no type"),
    ("type unknown", b'{"type":"drop_tables","id":"1"}', "unknown type"),
    ("type number", b'{"type":7,"id":"1"}', "type is a JSON number"),
    ("args array", b'{"type":"new_order","id":"1","args":[1,2]}', "args is a JSON array"),
    ("args string", b'{"type":"new_order","id":"1","args":"x"}', "args is a JSON string"),
    ("number beyond a double", b'{"type":"new_order","id":"1","args":{"x":1e999}}', "too large for a double"),
    ("args lone surrogate", b'{"type":"new_order","id":"1","args":{"x":"\\udc00"}}', "lone surrogate"),
    ("args key lone surrogate", b'{"type":"new_order","id":"1","args":{"\\ud800":1}}', "lone surrogate"),
]


@pytest.mark.parametrize("body, words", [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_refused_with_a_reason(body, words):
    # Given a body that is not a valid event, when parsed, I expect InvalidEvent saying why.
    with pytest.raises(InvalidEvent) as raised:
        parse(body)
    assert words in raised.value.reason
    assert len(raised.value.reason) < 200 and "\n" not in raised.value.reason


def test_args_as_deep_as_the_limit_parse_and_have_a_digest():
    depth = MAX_DEPTH - 2  # the event object and args are the first two levels
    event = parse(b'{"type":"new_order","id":"1","args":{"a":' + b"[" * depth + b"]" * depth + b"}}")
    assert len(event.digest) == 32


def test_the_talks_event_parses():
    event = parse(b'{"type":"new_order","id":"123"}')
    assert (event.type, event.id, dict(event.args)) == ("new_order", "123", {})


def test_digest_tells_payloads_apart_but_not_key_order():
    a = parse(b'{"type":"new_order","id":"1","args":{"x":1,"y":2}}')
    b = parse(b'{"args":{"y":2,"x":1},"id":"1","type":"new_order"}')
    c = parse(b'{"type":"new_order","id":"1","args":{"x":2,"y":2}}')
    d = parse(b'{"type":"ban_user","id":"1","args":{"x":1,"y":2}}')
    assert a.digest == b.digest
    assert len({a.digest, c.digest, d.digest}) == 3


HOSTILE_IDS = ["../notify/123", "/", "..", "a/b", "\0", "a\0b", "%2F", "%", "ü", "x y", "orders", "-", "_", "a.b",
               "\U0001f600", "\\", "\n"]


@pytest.mark.parametrize("event_id", HOSTILE_IDS)
def test_an_id_stays_under_its_service_prefix(event_id):
    # Given any id, I expect its key to be one path segment under the service's prefix.
    key = keys.dedup_key("/nirvana", "orders", event_id)
    prefix = keys.dedup_prefix("/nirvana", "orders")
    segment = key[len(prefix):]
    assert key.startswith(prefix)
    assert segment and all(ch.isalnum() or ch in "%_-" for ch in segment) and segment.isascii()
    assert keys.decode_id(segment) == event_id


def test_id_encoding_is_injective():
    ids = HOSTILE_IDS + [i.upper() for i in HOSTILE_IDS] + ["%25", "%", "25"]
    encoded = {keys.encode_id(i) for i in set(ids)}
    assert len(encoded) == len(set(ids))
    assert keys.encode_id("123") == "123"


# RFC 8785 (JCS) 3.2.2.3 reads every number as an IEEE 754 double; Appendix B lists these forms.
EQUAL_NUMBERS = [("1", "1.0"), ("1", "1e0"), ("1", "10e-1"), ("100000000000000000000", "1e20"),
                 ("0", "-0.0"), ("0.000001", "1e-6"), ("9007199254740992", "9007199254740992.0")]


@pytest.mark.parametrize("a, b", EQUAL_NUMBERS)
def test_equal_json_numbers_give_equal_digests(a, b):
    # Given the same id with one number written two ways, I expect one digest (RFC 8785).
    first = parse(b'{"type":"new_order","id":"1","args":{"qty":%s}}' % a.encode())
    second = parse(b'{"type":"new_order","id":"1","args":{"qty":%s}}' % b.encode())
    assert first.digest == second.digest


def test_digest_is_sha256_of_the_rfc8785_form():
    import hashlib
    # The RFC 8785 form: keys sorted by UTF-16 code units, UTF-8 text (no \\u escapes), shortest numbers.
    event = parse('{"type":"new_order","id":"1","args":{"\u20ac":"caf\\u00e9","\U0001f600":1.50,"a":1e21}}'.encode())
    form = '{"args":{"a":1e+21,"\u20ac":"caf\u00e9","\U0001f600":1.5},"id":"1","type":"new_order"}'
    assert event.digest == hashlib.sha256(form.encode()).hexdigest()[:32]


def test_integers_a_double_cannot_hold_stay_apart():
    # 2**53 + 1 and 2**53 are one double: JCS alone would merge them, svc keeps them apart, and apart
    # from the string of the same digits; 4300 digits (Python's own limit) still have a digest.
    big = 2 ** 53 + 1
    digests = {parse(b'{"type":"new_order","id":"1","args":{"n":%s}}' % n).digest
               for n in (str(big).encode(), str(big - 1).encode(), b'"%d"' % big, b"1" + b"0" * 4299)}
    assert len(digests) == 4


def test_done_marks_of_the_old_digest_still_match():
    # A done mark written before RFC 8785 (ASCII escapes) is the same payload, not a conflict.
    event = parse('{"type":"new_order","id":"1","args":{"who":"caf\u00e9"}}'.encode())
    assert event.digest != event.legacy_digest
    assert event.matches(event.legacy_digest) and event.matches(event.digest.encode())
    assert not event.matches("0" * 32)


# Values on both sides of the fast path's domain (svc.event._plain): escapes, non-BMP text, the
# edges of the safe integers, booleans (an int in Python), empty and nested containers, and what
# only rfc8785 may write (floats, non-ASCII keys).
CANONICAL_SAMPLES = [
    {"s": "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f nul \x00 us \x1f del \x7f"},
    {"s": "caf\u00e9 \u20ac \u2028 \u2029 \ufeff \U0001f600", "t": ""},
    {"n": [0, 1, -1, 2 ** 53 - 1, -(2 ** 53 - 1), True, False, None]},
    {"z": {}, "a": [], "m": {"b": [1, {"c": [None, "x"]}], "a": {"": 0}}, "A": 1, "_": 2, "~": 3},
    {"f": 1.0}, {"f": [0.1, -0.0, 1e21, 5e-324]}, {"\u20ac": 1, "a": 2}, {"\U0001f600": 1, "\ufb01": 2},
]


@pytest.mark.parametrize("value", CANONICAL_SAMPLES)
def test_the_fast_canonical_form_is_rfc8785s(value):
    import rfc8785

    from svc.event import _PLAIN, _plain, canonical

    # Given a value on either side of the fast path's domain, nested as an event's args...
    for nested in (value, [value, value], {"args": value, "id": "1"}, {"x": [{"y": value}]}):
        # ... I expect canonical() to give rfc8785's bytes, and the fast path, wherever it is
        # taken, to write just those.
        reference = rfc8785.dumps(nested)
        assert canonical(nested) == reference
        if _plain(nested):
            assert _PLAIN.encode(nested).encode() == reference
    # Floats and non-ASCII keys are left to rfc8785, the common event is not; so are integers past
    # 2**53 (svc's own form, see above) and a lone surrogate, refused as rfc8785 refuses it.
    assert not _plain({"f": 1.0}) and not _plain({"\u20ac": 1}) and _plain({"sku": "t", "qty": [1, None]})
    assert not _plain({"n": 2 ** 53}) and not _plain({"n": [-(2 ** 53)]})
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical({"s": "\ud800"})


def test_an_id_is_one_id_whatever_its_unicode_normal_form():
    from svc import keys

    # Given "café" as NFC (é one code point) and as NFD (e and a combining acute)...
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    first, second = (parse(json.dumps({"type": "new_order", "id": i}).encode()) for i in (nfc, nfd))
    # ... I expect one id (NFC), one key, one payload digest: a repeat, not a conflict.
    assert first.id == second.id == nfc
    assert keys.encode_id(nfd) == keys.encode_id(nfc) and keys.decode_id(keys.encode_id(nfd)) == nfc
    assert first.digest == second.digest
    # Payload strings stay as written (RFC 8785 does not normalize): other args, other digest.
    a, b = (parse(json.dumps({"type": "new_order", "id": "x", "args": {"name": n}}).encode()) for n in (nfc, nfd))
    assert a.digest != b.digest


@pytest.mark.parametrize("body", [
    b'{"type":"new_order","id":"1","args":{"sku":"a","customer":"c"}}',
    b'{"type":"new_order","id":"1:2","args":{"at":"12:00:00","url":"http://x/"}}',
    b'{"type":"new_order","id":"1","args":{"a":{"b":{"c":[1,{"d":":"}]}},"e":[]}}',
    b'{"type":"new_order","id":"\\u003a","args":{"\\u003a":1,"k":"\\\\:"}}',
    b'{ "type" : "new_order" , "id" : "1" , "args" : { } }',
])
def test_a_body_without_duplicate_keys_parses_as_json_reads_it(body):
    # Given bodies with no key twice: flat, with colons in strings, nested, escaped, spaced...
    # ... I expect the event json.loads reads (the duplicate-key check refuses nothing else).
    event = parse(body)
    data = json.loads(body)
    assert (event.type, event.id, dict(event.args)) == (data["type"], data["id"], data.get("args", {}))
