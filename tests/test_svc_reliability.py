"""Faults against the real stack: replicas racing, SIGKILL mid-work, etcd away, connections closed.

The effects in etcd turn "nothing lost, nothing done twice" into counts per event id.
"""

import shutil
import time

import pytest
from conftest import need

from nirvana import stack
from svc import keys
from svc.effects import records
from nirvana.testing import wait_for

NEW_ORDER = {"type": "new_order", "id": "dup"}


@pytest.mark.parametrize("replicas", [2, 8])
def test_replicas_given_the_same_id_leave_one_effect(svc_world, replicas):
    orders = svc_world.service_name("orders")
    # WORK_MS keeps each claim held a while, so siblings really meet a live claim.
    svc_world.start(orders, replicas=replicas, enable_etcd=True, work_ms=200, claim_ttl=5)
    svc_world.publish(orders, NEW_ORDER, count=4 * replicas)
    svc_world.publish(orders, {"type": "new_order", "id": "x"}, count=20, fresh_ids=True)
    wait_for(lambda: svc_world.depth(orders) == 0 and len(svc_world.effects_by_id(orders)) == 21,
             "every event handled", timeout=20)
    assert all(p.alive() for p in svc_world.processes)
    # Stopped, each replica settles its window and returns the copies it held back (a sibling's
    # live claim) to the queue; then one consumer handles them, in order, before a later marker:
    # once the marker is processed, no copy is left to be processed a second time.
    assert [p.stop() for p in svc_world.processes] == [0] * replicas
    svc_world.start(orders, enable_etcd=True)
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1 and svc_world.depth(orders) == 0,
             "every copy handled before a later event")
    assert svc_world.effects(orders, "dup") == 1
    assert set(svc_world.effects_by_id(orders).values()) == {1}


def test_sigkill_between_claim_and_done_processes_once_after_the_lease(svc_world):
    orders = svc_world.service_name("orders")
    claim_ttl = 1
    [crashing] = svc_world.start(orders, enable_etcd=True, claim_ttl=claim_ttl, crash_at="claimed")
    svc_world.publish(orders, NEW_ORDER)
    # Given a consumer killed after its claim, before its work was marked done...
    assert crashing.popen.wait(10) == -9
    killed = time.time()
    assert svc_world.effects(orders, "dup") == 0
    assert svc_world.etcd.get(keys.dedup_key(svc_world.prefix, orders, "dup")).startswith(b"claimed ")
    # ... when a fresh consumer gets the redelivery, it waits out the dead claim, then processes it once.
    svc_world.start(orders, enable_etcd=True, claim_ttl=claim_ttl)
    wait_for(lambda: svc_world.effects(orders, "dup") == 1, "the event processed after the lease expired")
    # The dead claim's lease was last refreshed at most TTL/3 before the kill, so it ended no
    # earlier than 2/3 of the TTL after it; the work was not done again before that.
    [effect] = records(svc_world.etcd, orders, prefix=svc_world.prefix)
    assert effect["at"] - killed >= claim_ttl * 2 / 3, effect["at"] - killed
    # A later event processed by the only consumer means the redelivery before it was settled.
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1, "a later event processed")
    assert svc_world.effects(orders, "dup") == 1


@pytest.mark.parametrize("enable_etcd, effects", [(True, 1), (False, 2)])
def test_sigkill_after_done_before_ack(svc_world, enable_etcd, effects):
    orders = svc_world.service_name("orders")
    [crashing] = svc_world.start(orders, enable_etcd=enable_etcd, crash_at="done")
    svc_world.publish(orders, NEW_ORDER)
    assert crashing.popen.wait(10) == -9
    assert svc_world.effects(orders, "dup") == 1
    # When the unacked event is redelivered: with dedup skipped (1 effect), without processed again (2).
    svc_world.start(orders, enable_etcd=enable_etcd)
    wait_for(lambda: svc_world.depth(orders) == 0 and svc_world.effects(orders, "dup") >= 1, "redelivery handled")
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1, "a later event processed")
    assert svc_world.effects(orders, "dup") == effects


@pytest.mark.parametrize("enable_etcd", [True, False])
def test_closed_broker_connections_reconnect_and_lose_nothing(svc_world, enable_etcd):
    program = stack.rabbitmq_node().program()   # the node's own rabbitmqctl closes the connections
    need(f"{program} (to close connections)", shutil.which(program) is not None)
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=enable_etcd, prefetch=20)
    publisher = svc_world.publisher(orders)
    ids = []
    for round_ in range(3):
        ids += publisher.publish({"type": "new_order", "id": f"r{round_}"}, count=300, fresh_ids=True).ids
        # Given events in flight, when the broker closes the consumer's connection...
        assert svc_world.close_connections(process) >= 1
    # ... I expect it back, every event processed, and with dedup none twice.
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == len(ids), "every event processed", timeout=30)
    svc_world.wait_consumers(orders, 1, [process])
    counts = svc_world.effects_by_id(orders)
    assert set(counts) == set(ids)
    if enable_etcd:
        assert set(counts.values()) == {1}
    assert "reconnecting" in process.log() and process.alive()


def test_etcd_stopped_mid_stream_fails_closed_then_processes_once(svc_world, own_etcd, graphite_url):
    from svc import Etcd, counts_by_id
    from svc.config import parse_endpoints
    from nirvana.testing import graphite_total

    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own_etcd.endpoint, etcd_timeout=0.5)
    publisher = svc_world.publisher(orders)
    first = publisher.publish({"type": "new_order", "id": "a"}, count=50, fresh_ids=True).ids
    etcd = Etcd(parse_endpoints(own_etcd.endpoint))
    try:
        wait_for(lambda: len(counts_by_id(etcd, orders, prefix=svc_world.prefix)) == 50, "the first 50 processed")
        # Given etcd gone mid-stream, when more events (and repeats) arrive, nothing is processed...
        own_etcd.stop()
        second = publisher.publish({"type": "new_order", "id": "b"}, count=50, fresh_ids=True).ids
        publisher.publish({"type": "new_order", "id": first[0]}, count=5)
        unavailable = f"stats_counts.{orders}_dedup_unavailable"
        wait_for(lambda: graphite_total(graphite_url, unavailable) > 0, "dedup_unavailable counted", timeout=15,
                 interval=0.5)
        assert process.alive()
        # ... and when etcd is back, every event is processed exactly once.
        own_etcd.start()
        wait_for(lambda: len(counts_by_id(etcd, orders, prefix=svc_world.prefix)) == 100, "all 100 processed",
                 timeout=30)
        wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained", timeout=15)
        # A later event processed by the only consumer means every redelivery before it was settled.
        publisher.publish({"type": "new_order", "id": "marker"})
        wait_for(lambda: counts_by_id(etcd, orders, prefix=svc_world.prefix).get("marker") == 1,
                 "a later event processed", timeout=15)
        counts = counts_by_id(etcd, orders, prefix=svc_world.prefix)
        assert set(counts) == set(first) | set(second) | {"marker"} and set(counts.values()) == {1}
    finally:
        etcd.close()


def test_revoked_leases_are_replaced_and_processing_resumes(svc_world, own_etcd):
    from svc import Etcd, counts_by_id
    from svc.config import parse_endpoints

    orders = svc_world.service_name("orders")
    # A claim TTL of 60 s: its keepalive (every 20 s) cannot be what notices the revoked lease.
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own_etcd.endpoint, claim_ttl=60)
    publisher = svc_world.publisher(orders)
    first = publisher.publish({"type": "new_order", "id": "a"}, count=20, fresh_ids=True).ids
    etcd = Etcd(parse_endpoints(own_etcd.endpoint))
    processed = lambda: counts_by_id(etcd, orders, prefix=svc_world.prefix)  # noqa: E731
    try:
        wait_for(lambda: len(processed()) == 20, "the first 20 processed")
        # Given every lease revoked (the claim lease and the done marks' retention lease), as by an
        # operator or an etcd restored from a backup...
        leases = etcd.leases()
        assert len(leases) == 2
        for lease in leases:
            etcd.revoke(lease)
        # ... when more events come, I expect them processed within seconds, each once, on new leases.
        second = publisher.publish({"type": "new_order", "id": "b"}, count=20, fresh_ids=True).ids
        wait_for(lambda: len(processed()) == 40, "the next 20 processed on new leases", timeout=5)
        assert set(processed()) == set(first) | set(second) and set(processed().values()) == {1}
        log = process.log()
        assert "claim lease" in log and "retention lease" in log and process.alive()
        assert not set(etcd.leases()) & set(leases)
    finally:
        etcd.close()
