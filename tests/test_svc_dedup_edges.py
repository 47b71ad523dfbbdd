"""Deduplication at etcd's edges, against real etcds: payload identity (RFC 8785), the server's
request limits, a dead sibling's claims, the space quota, lost claims, the claim lease's race.

Limits and faults the stack's etcd must not see run on throwaway etcds (``etcd_factory``).
"""

from svc import metrics
from svc.testing import graphite_total, wait_for


def test_equal_numbers_are_one_payload_skipped_not_a_conflict(svc_world):
    orders = svc_world.service_name("orders")
    svc_world.start(orders, enable_etcd=True)
    # Given an event processed with {"qty": 1}...
    svc_world.publish(orders, {"type": "new_order", "id": "q", "args": {"qty": 1}})
    wait_for(lambda: svc_world.effects(orders, "q") == 1, "the first copy processed")
    # ... when the same id comes with {"qty": 1.0} (an equal JSON number), and then a marker...
    svc_world.publish(orders, {"type": "new_order", "id": "q", "args": {"qty": 1.0}})
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1 and svc_world.depth(orders) == 0, "the marker processed")
    # ... I expect the repeat skipped: no second effect, no dead letter (no conflict).
    assert svc_world.effects(orders, "q") == 1
    assert svc_world.dead_letters() == []
