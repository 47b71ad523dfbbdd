"""svc's etcd edge against the real etcd: fast protobuf, fail-over, errors translated, keys contained."""

import pytest

from svc import DedupUnavailable, Etcd, keys
from svc.config import parse_endpoints
from svc.testing import wait_for


def test_etcd3_runs_on_the_fast_protobuf(etcd_endpoint):
    from google.protobuf.internal import api_implementation

    Etcd(parse_endpoints(etcd_endpoint)).close()
    assert api_implementation.Type() == "upb"


def test_a_dead_endpoint_fails_over_to_the_next(etcd_endpoint):
    # Given a cluster list whose first member is down (nothing listens on port 9)...
    etcd = Etcd(parse_endpoints(f"127.0.0.1:9,{etcd_endpoint}"), timeout=1.0)
    try:
        # ... the first call fails as DedupUnavailable (no gRPC error leaks), the next one works.
        with pytest.raises(DedupUnavailable, match="127.0.0.1:9"):
            etcd.get("/svc-test/none")
        assert etcd.get("/svc-test/none") is None and etcd.endpoint == etcd_endpoint
    finally:
        etcd.close()


HOSTILE = ["../notify/123", "/", "..", "a/../../b", "\0", "x\0/y", "%2F..%2F", "\u202e", "\U0001f600"]


def test_hostile_ids_stay_in_their_service_keys(svc_world):
    orders, notify = svc_world.service_name("orders"), svc_world.service_name("notify")
    svc_world.start(orders, enable_etcd=True)
    publisher = svc_world.publisher(orders)
    for event_id in HOSTILE:
        assert publisher.publish({"type": "new_order", "id": event_id}).ok
    # Every hostile id is processed once, and its keys are one segment under orders' own prefixes.
    wait_for(lambda: svc_world.effects_by_id(orders) == {i: 1 for i in HOSTILE}, "every hostile id processed once")
    scanned = [key for page in svc_world.etcd.scan_prefix(svc_world.prefix + "/") for key, _ in page]
    dedup_base, effects_base = keys.dedup_prefix(svc_world.prefix, orders), keys.effects_prefix(svc_world.prefix, orders)
    assert len(scanned) == 2 * len(HOSTILE)
    for key in map(bytes.decode, scanned):
        assert key.startswith((dedup_base, effects_base)) and ".." not in key.split("/") and "\0" not in key
    assert svc_world.effects(notify) == 0
