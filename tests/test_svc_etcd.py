"""svc's etcd edge against the real etcd: fast protobuf, fail-over, errors translated, keys contained."""

import threading

import pytest

from svc import DedupUnavailable, Etcd, keys
from svc.config import parse_endpoints
from nirvana.testing import wait_for


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
    # a done mark per id; the effects in window records (one per commit) under orders' effects prefix
    assert sum(key.startswith(dedup_base.encode()) for key in scanned) == len(HOSTILE)
    for key in map(bytes.decode, scanned):
        assert key.startswith((dedup_base, effects_base)) and ".." not in key.split("/") and "\0" not in key
    assert svc_world.effects(notify) == 0


def test_compact_and_defragment_gives_back_the_space_of_deleted_keys(own_etcd):
    etcd = Etcd(parse_endpoints(own_etcd.endpoint), timeout=10.0)
    try:
        # Given 32 MiB written and deleted (what a bench run leaves: etcd keeps the old revisions,
        # and its file keeps their pages even once compacted)...
        for i in range(32):
            etcd.put(f"/bench/{i}", b"x" * 1024 * 1024)
        etcd.delete_prefix("/bench/")
        # ... I expect the database file back under 4 MB, and a second call (nothing new to
        # compact) to work all the same.
        [size] = etcd.compact_and_defragment()
        assert size < 4e6, size
        assert etcd.compact_and_defragment()[0] < 4e6
    finally:
        etcd.close()


def test_the_dedup_watch_resumes_after_its_revision_was_compacted(own_etcd):
    from svc.dedup import EtcdDedup

    etcd = Etcd(parse_endpoints(own_etcd.endpoint), timeout=5.0)
    dedup = EtcdDedup(etcd, "/nirvana", "orders", claim_ttl=5, retention=600)
    released = []
    dedup.on_release = released.append
    try:
        # Given done marks written after the revision a watch resumes from (it broke, say), and
        # that revision compacted away (etcd's auto-compaction, or a bench's compact)...
        base = keys.dedup_prefix("/nirvana", "orders")
        etcd.put(f"{base}a", b"done 1")
        start = _revision(etcd) + 1
        etcd.put(f"{base}b", b"done 2")
        etcd.put("/elsewhere", b"")   # the compaction goes past b's revision too
        etcd.compact_and_defragment()
        # ... when the watch resumes from there, I expect it to read the done ids again (ErrCompacted)...
        dedup._start(lambda: dedup._follow(start, threading.Event()), "dedup-watch")
        wait_for(lambda: b"a" in dedup.done and b"b" in dedup.done and len(dedup.done) == 2, "the done ids read again")
        # ... and to follow on: a done mark written now is learnt, and releases what it holds.
        etcd.put(f"{base}c", b"done 3")
        wait_for(lambda: b"c" in dedup.done and f"{base}c".encode() in released, "c learnt from the watch")
    finally:
        dedup.close()
        etcd.close()


def _revision(etcd) -> int:
    """etcd's current revision (what a scan returns when it ends)."""
    pages = etcd.scan_prefix("/")
    try:
        while True:
            next(pages)
    except StopIteration as end:
        return end.value


def test_a_restarted_throwaway_etcd_serves_a_read_as_soon_as_its_start_returns(etcd_factory):
    # Given a throwaway etcd stopped and started again on its data, as the fail-closed tests do
    # mid-stream: its client port accepts connections before it has elected itself...
    own = etcd_factory()
    etcd = Etcd(parse_endpoints(own.endpoint), timeout=5.0)
    etcd.put(b"/k", b"v")
    etcd.close()
    own.stop()
    own.start()
    # ... I expect a linearizable read answered within 0.5 s once start() returns (a CI run's first
    # read after a restart failed with DEADLINE_EXCEEDED; start() waited for the port only, and the
    # first read was served 0.97-1.67 s after it returned, 5 restarts; now 3-7 ms)
    etcd = Etcd(parse_endpoints(own.endpoint), timeout=0.5)
    try:
        assert etcd.get(b"/k") == b"v"
    finally:
        etcd.close()
