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
