"""The read model's pure parts: upcasting old event shapes, applying events, the content digest."""

import types

from svc import projection
from svc.event import Event


def order(event_id: str, **args) -> Event:
    return Event("new_order", event_id, types.MappingProxyType(args))


def test_an_old_event_shape_is_upcast_to_todays():
    # Given args written by an older producer (item, customer_id, no qty) and today's
    old = {"item": "tshirt", "customer_id": "ada"}
    # When they are upcast
    # I expect the old renamed with one item per order, and today's shape unchanged
    assert projection.upcast(old) == {"sku": "tshirt", "customer": "ada", "qty": 1}
    today = {"sku": "tshirt", "customer": "ada", "qty": 3}
    assert projection.upcast(today) == today
    # a field present under both names keeps today's value
    assert projection.upcast({"item": "old", "sku": "new"})["sku"] == "new"


def test_an_old_log_builds_todays_view():
    # Given the same orders, once as an older producer wrote them and once as today's does
    old = [order(f"o-{i}", item=f"sku-{i % 3}", customer_id=f"c-{i % 2}") for i in range(10)]
    new = [order(f"o-{i}", sku=f"sku-{i % 3}", customer=f"c-{i % 2}", qty=1) for i in range(10)]
    # I expect equal views, so equal digests
    assert projection.build(old) == projection.build(new)
    assert projection.digest(projection.build(old)) == projection.digest(projection.build(new))


def test_the_view_counts_orders_and_quantities_once_per_id():
    # Given orders, a copy of one, a ban (no order) and an order without sku or customer
    events = [order("a", sku="s1", customer="c1", qty=2), order("b", sku="s1", customer="c2"),
              order("a", sku="s1", customer="c1", qty=2), Event("ban_user", "u1"), order("c")]
    # I expect each id counted once, the missing fields under "?"
    assert projection.build(events) == {
        "sku/s1": {"orders": 2, "qty": 3}, "customer/c1": {"orders": 1}, "customer/c2": {"orders": 1},
        "sku/%3F": {"orders": 1, "qty": 1}, "customer/%3F": {"orders": 1}}


def test_the_digest_depends_on_content_not_on_order():
    # Given the same view built in two orders
    a = {"sku/s1": {"orders": 1, "qty": 1}, "customer/c1": {"orders": 1}}
    b = {"customer/c1": {"orders": 1}, "sku/s1": {"qty": 1, "orders": 1}}
    # I expect one digest (RFC 8785 sorts keys), and another for other content
    assert projection.digest(a) == projection.digest(b)
    assert projection.digest(a) != projection.digest({**a, "sku/s1": {"orders": 1, "qty": 2}})
    assert len(projection.digest(a)) == 64


def test_done_records_are_read_back_and_an_id_in_two_counts_as_applied_twice(etcd):
    client, prefix = etcd
    base = projection.version_prefix(prefix, "billing", 1)
    # Given two windows' done records and a done mark of one key per id (as versions before wrote)
    first = {b"a": b'={"id":"a"}', b"caf%C3%A9": b"=" + '{"id":"café"}'.encode()}
    client.put(projection.done_record_key(base, 9), projection.done_record(first))
    client.put(projection.done_record_key(base, 19), projection.done_record({b"b": b"0" * 32}))
    client.put(f"{base}done/old".encode(), b'={"id":"old"}')
    # I expect every id read back with its value, and none applied twice ...
    assert projection.read_done(client, prefix, "billing", 1) == {**first, b"b": b"0" * 32, b"old": b'={"id":"old"}'}
    assert projection.applied_twice(client, prefix, "billing", 1) == 0
    # ... until an id shows up in a second record, or in a record and a done mark
    client.put(projection.done_record_key(base, 29), projection.done_record({b"a": b'={"id":"a"}', b"old": b"="}))
    assert projection.applied_twice(client, prefix, "billing", 1) == 2
