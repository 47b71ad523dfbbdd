"""A held delivery is never acked by another window's "multiple" ack (against RabbitMQ and etcd).

Seen in the chaos run (bench/chaos.py): a delivery held for a sibling's claim came due and went
into a new window; the window in flight before it, all acked, was acked with ``multiple`` on its
last delivery tag, which covered the lower tag of the held delivery too. Its own window then
requeued it (held again) with a nack of a tag already acked: RabbitMQ closed the channel
(PRECONDITION_FAILED, unknown delivery tag) and the event was gone, never processed.
"""

import json

from svc import keys
from svc.event import parse
from svc.testing import wait_for


def test_a_held_delivery_that_comes_due_mid_stream_is_not_lost(svc_world):
    orders = svc_world.service_name("orders")
    etcd = svc_world.etcd
    # Given a sibling's live claim on "x" (its lease outlives the test's stream)...
    event = {"type": "new_order", "id": "x"}
    lease = etcd.grant(60)
    digest = parse(json.dumps(event).encode()).digest
    etcd.put(keys.dedup_key(svc_world.prefix, orders, "x"), f"claimed {digest} {lease:x}".encode(), lease)
    # ... and "x" published ahead of a stream slow enough to keep windows in flight while x's
    # wait (CLAIM_TTL) runs out twice...
    svc_world.publish(orders, event)
    ids = svc_world.publish(orders, {"type": "new_order", "id": "s"}, count=200, fresh_ids=True).ids
    [process] = svc_world.start(orders, enable_etcd=True, claim_ttl=1, prefetch=10, work_ms=100)
    wait_for(lambda: len(svc_world.effects_by_id(orders)) >= len(ids), "the stream processed", timeout=60)
    assert svc_world.effects(orders, "x") == 0
    # ... when the sibling's claim ends...
    etcd.revoke(lease)
    # ... I expect x processed once: it was held or requeued meanwhile, never acked unprocessed.
    wait_for(lambda: svc_world.effects(orders, "x") == 1, "x processed after the claim ended", timeout=20)
    wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained")
    assert set(svc_world.effects_by_id(orders).values()) == {1}
    assert "closed the channel" not in process.log()


def _unacked(world, service: str) -> int:
    """Deliveries of ``service``'s queue the broker counts as sent and not yet acked (rabbitmqctl)."""
    rows = (line.split("\t") for line in world._rabbitmqctl("list_queues", "name", "messages_unacknowledged").splitlines())
    return next((int(row[1]) for row in rows if row[0] == world.queue(service)), 0)


def test_held_deliveries_leave_a_full_prefetch_of_workable_events(svc_world):
    orders = svc_world.service_name("orders")
    etcd = svc_world.etcd
    # Given a sibling's live claims on 10 events (a dead sibling's window: they outlive the test)...
    lease = etcd.grant(60)
    for i in range(10):
        event = {"type": "new_order", "id": f"held-{i}"}
        digest = parse(json.dumps(event).encode()).digest
        etcd.put(keys.dedup_key(svc_world.prefix, orders, event["id"]), f"claimed {digest} {lease:x}".encode(), lease)
        svc_world.publish(orders, event)
    # ... published ahead of a long stream, consumed with PREFETCH=30 by a slow service...
    svc_world.publish(orders, {"type": "new_order", "id": "s"}, count=300, fresh_ids=True)
    svc_world.start(orders, enable_etcd=True, claim_ttl=60, prefetch=30, work_ms=500)
    # ... I expect the 10 held aside (unacked) not to eat its window: 30 more deliveries in flight.
    wait_for(lambda: _unacked(svc_world, orders) >= 40, "10 held and 30 workable deliveries unacked", timeout=30,
             interval=0.5)
    etcd.revoke(lease)
    wait_for(lambda: svc_world.depth(orders) == 0 and len(svc_world.effects_by_id(orders)) == 310,
             "all 310 events processed", timeout=60)
    assert set(svc_world.effects_by_id(orders).values()) == {1}
