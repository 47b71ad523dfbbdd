"""Deduplication at etcd's edges, against real etcds: payload identity (RFC 8785), the server's
request limits, a dead sibling's claims, the space quota, lost claims, the claim lease's race.

Limits and faults the stack's etcd must not see run on throwaway etcds (``etcd_factory``).
"""

import pytest

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


def _processed(svc_world, etcd, service):
    from svc import counts_by_id
    return counts_by_id(etcd, service, prefix=svc_world.prefix)


# (etcd's flag, an event id, the words of etcd's refusal): windows of 50 claims, one nested
# transaction each, are over 16 operations; 60 ids of 240 bytes of UTF-8 (720 bytes in their keys)
# make a window's claims about 100 KiB, over 16 KiB. etcd's defaults are 128 and 1.5 MiB.
LIMITS = [(("--max-txn-ops", "16"), "t", "too many operations"),
          (("--max-request-bytes", "16384"), "\u00e9" * 120, "request is too large")]


@pytest.mark.parametrize("flags, event_id, refusal", LIMITS, ids=["max-txn-ops", "max-request-bytes"])
def test_transactions_fit_the_etcd_servers_limits(svc_world, etcd_factory, flags, event_id, refusal):
    from svc import Etcd
    from svc.config import parse_endpoints

    # Given an etcd run with lower request limits than the kit's...
    own = etcd_factory(*flags)
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint)
    # ... when 60 events come...
    ids = svc_world.publish(orders, {"type": "new_order", "id": event_id}, count=60, fresh_ids=True).ids
    etcd = Etcd(parse_endpoints(own.endpoint))
    try:
        # ... I expect every event processed once: svc split its transactions and kept the limit.
        wait_for(lambda: len(_processed(svc_world, etcd, orders)) == 60, "all 60 processed", timeout=30)
        wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained")
        counts = _processed(svc_world, etcd, orders)
        assert set(counts) == set(ids) and set(counts.values()) == {1}
        log = process.log()
        assert "refused a transaction" in log and refusal in log
        assert "etcd unavailable" not in log
    finally:
        etcd.close()
