"""Deduplication at etcd's edges, against real etcds: payload identity (RFC 8785), the server's
request limits, a dead sibling's claims, the space quota, lost claims, the claim lease's race.

Limits and faults the stack's etcd must not see run on throwaway etcds (``etcd_factory``).
"""

import signal

import pytest

from svc import keys
from svc.config import DEFAULT_PREFETCH
from nirvana.testing import graphite_total, wait_for


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


@pytest.mark.parametrize("mode", ["claims", "talk"])
def test_nfc_and_nfd_spellings_of_an_id_are_one_event(svc_world, graphite_url, mode):
    orders = svc_world.service_name("orders")
    svc_world.start(orders, enable_etcd=True, dedup_mode=mode)
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    # Given "café" processed as NFC (é one code point)...
    svc_world.publish(orders, {"type": "new_order", "id": nfc})
    wait_for(lambda: sum(svc_world.effects_by_id(orders).values()) == 1, "the NFC copy processed")
    # ... when it comes again as NFD (e and a combining acute: a macOS file name, another keyboard)...
    svc_world.publish(orders, {"type": "new_order", "id": nfd})
    svc_world.publish(orders, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(orders, "marker") == 1 and svc_world.depth(orders) == 0, "the marker processed")
    # ... I expect one id: one effect (recorded under the NFC id), the repeat skipped, no conflict.
    effects = svc_world.effects_by_id(orders)
    assert effects == {nfc: 1, "marker": 1}
    skipped = f"stats_counts.{orders}_new_order_skipped"
    wait_for(lambda: graphite_total(graphite_url, skipped) >= 1, f"{skipped} in Graphite", timeout=20, interval=0.5)
    assert graphite_total(graphite_url, skipped) == 1
    assert svc_world.dead_letters() == []


def _processed(svc_world, etcd, service):
    from svc import counts_by_id
    return counts_by_id(etcd, service, prefix=svc_world.prefix)


# (etcd's flag, an event id, the words of etcd's refusal): a window of up to 60 claims, one nested
# transaction each, is over 16 operations; 60 ids of 240 bytes of UTF-8 (720 bytes in their keys)
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
    # ... when 60 events wait in the queue as svc starts (published first, so its first window holds
    # them all: published while it consumes, they may come in windows too small to break a limit)...
    ids = svc_world.publish(orders, {"type": "new_order", "id": event_id}, count=60, fresh_ids=True).ids
    [process] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint)
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


def _claims(svc_world, service) -> set[bytes]:
    """The keys of the live claims of ``service`` (a replica working, or dead with its lease alive)."""
    base = keys.dedup_prefix(svc_world.prefix, service)
    return {key for page in svc_world.etcd.scan_prefix(base) for key, value in page if value.startswith(b"claimed ")}


@pytest.mark.slow
def test_a_dead_siblings_claims_do_not_stall_the_queue(svc_world):
    orders = svc_world.service_name("orders")
    claim_ttl = 15
    ids = svc_world.publish(orders, {"type": "new_order", "id": "d"}, count=4000, fresh_ids=True).ids
    # Given 4,000 events and a replica that claims a window and dies (its claims live until its
    # lease expires, at least 2/3 of CLAIM_TTL after its death)...
    [dead] = svc_world.start(orders, enable_etcd=True, claim_ttl=claim_ttl, crash_at="claimed", wait=False)
    assert dead.popen.wait(15) == -9
    dead_claims = _claims(svc_world, orders)
    assert dead_claims
    # ... when a healthy replica takes the queue...
    [survivor] = svc_world.start(orders, enable_etcd=True, claim_ttl=claim_ttl)
    # ... I expect every other event processed while the dead claims still live: the held events
    # wait aside, they do not come back at the head of the queue and fill every window.
    others = len(ids) - len(dead_claims)
    wait_for(lambda: len(svc_world.effects_by_id(orders)) >= others, f"the {others} unclaimed events processed",
             timeout=claim_ttl * 2 / 3, interval=0.2)
    assert _claims(svc_world, orders) == dead_claims, "the dead claims expired before the others were done"
    # Held aside means unacked: killed now, the survivor gives every held event back to the queue,
    # and with them the deliveries done on its first channel above the held ones (their acks wait
    # for one ack "multiple" until no held one lies below: svc/acks.py) and the window it was
    # settling if the kill beat its acks: those events' effects and done marks are written (the
    # wait above saw them), so they come back to be skipped. At most the first channel's prefetch
    # and one window, a third of the prefetch (at load, a CI run timed out waiting for the exact count).
    survivor.kill()
    wait_for(lambda: svc_world.depth(orders) >= len(dead_claims), "the held events back in the queue")
    assert svc_world.depth(orders) <= DEFAULT_PREFETCH + DEFAULT_PREFETCH // 3
    svc_world.start(orders, enable_etcd=True, claim_ttl=claim_ttl)
    # When the dead lease expires, the held events are processed too: every id once.
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == len(ids), "all 4000 processed", timeout=claim_ttl + 15)
    wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained")
    counts = svc_world.effects_by_id(orders)
    assert set(counts) == set(ids) and set(counts.values()) == {1}


def _fill(etcd) -> None:
    """Write 512 KiB values until etcd refuses for space: it raises its NOSPACE alarm."""
    from svc.etcd import NoSpace

    for i in range(200):
        try:
            etcd.put(f"/filler/{i}", b"x" * 512 * 1024)
        except NoSpace:
            return
    raise AssertionError("etcd took 100 MiB without a NOSPACE alarm")


def _free_space(endpoint: str) -> None:
    """What an operator does (etcd's maintenance guide, "Space quota"): delete, compact, defragment,
    disarm; here through etcd3's client, as etcdctl is not installed."""
    from svc import etcd as _etcd

    host, port = endpoint.rsplit(":", 1)
    client = _etcd._client(host, int(port), 10)
    try:
        client.delete_prefix("/filler/")
        revision = client.kvstub.Range(_etcd._rpc().RangeRequest(key=b"/"), 10).header.revision
        client.compact(revision, physical=True)
        client.defragment()
        for alarm in list(client.list_alarms()):  # as etcdctl does: member 0 would disarm none
            client.disarm_alarm(alarm.member_id)
    finally:
        client.close()


def test_the_nospace_alarm_is_honoured_and_says_how_to_recover(svc_world, etcd_factory, graphite_url):
    from svc import Etcd
    from svc.config import parse_endpoints

    own = etcd_factory("--quota-backend-bytes", str(8 * 1024 * 1024))
    orders = svc_world.service_name("orders")
    [first] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint)
    publisher = svc_world.publisher(orders)
    etcd = Etcd(parse_endpoints(own.endpoint), timeout=10)
    processed = lambda: _processed(svc_world, etcd, orders)  # noqa: E731
    try:
        before = publisher.publish({"type": "new_order", "id": "a"}, count=5, fresh_ids=True).ids
        wait_for(lambda: len(processed()) == 5, "the first 5 processed")
        # Given etcd out of space (its NOSPACE alarm raised)...
        _fill(etcd)
        assert etcd.alarms() == ["NOSPACE"]
        # ... when events come, I expect none processed (etcd would take the nested transactions of
        # claims and commits), the refusals counted, and one line saying what is wrong and the fix.
        during = publisher.publish({"type": "new_order", "id": "b"}, count=5, fresh_ids=True).ids
        unavailable = f"stats_counts.{orders}_dedup_unavailable"
        wait_for(lambda: graphite_total(graphite_url, unavailable) >= 5, "dedup_unavailable counted", timeout=20,
                 interval=0.5)
        assert set(processed()) == set(before)
        for words in ("NOSPACE", "etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"):
            assert words in first.log()
        # A replica started during the alarm says the same, not "is it running?", and consumes.
        [second] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint)
        wait_for(lambda: "NOSPACE" in second.log(), "the second replica's NOSPACE line")
        assert "is it running" not in second.log()
        # When an operator frees space and disarms the alarm, every event is processed once.
        _free_space(own.endpoint)
        wait_for(lambda: len(processed()) == 10, "all 10 processed after the alarm", timeout=30)
        wait_for(lambda: svc_world.depth(orders) == 0, "the queue drained")
        counts = processed()
        assert set(counts) == set(before) | set(during) and set(counts.values()) == {1}
        assert "cleared" in first.log() and first.alive() and second.alive()
    finally:
        etcd.close()


def _revision(etcd) -> int:
    """etcd's current revision: it moves with every write (a put, a delete that deletes)."""
    from svc import etcd as _etcd

    return etcd._call("range", "kvstub", "Range", _etcd._rpc().RangeRequest(key=b"\0")).header.revision


def _names_the_alarm(process) -> None:
    wait_for(lambda: "NOSPACE" in process.log(), f"{process.service}'s NOSPACE line")
    wait_for(lambda: process.log().count("requeued") >= 2, f"{process.service} requeueing")
    assert "etcdctl alarm disarm" in process.log() and process.log().count("NOSPACE") == 1


def test_nothing_is_written_through_the_nospace_alarm_in_any_mode(svc_world, etcd_factory):
    from svc import Etcd
    from svc.config import parse_endpoints

    own = etcd_factory("--quota-backend-bytes", str(8 * 1024 * 1024))
    orders = svc_world.service_name("orders")
    [claims] = svc_world.start(orders, enable_etcd=True, etcd_endpoints=own.endpoint)
    etcd = Etcd(parse_endpoints(own.endpoint), timeout=10)
    try:
        svc_world.publish(orders, {"type": "new_order", "id": "a"}, count=5, fresh_ids=True)
        wait_for(lambda: len(_processed(svc_world, etcd, orders)) == 5, "the first 5 processed")
        # Given etcd out of space while a replica runs that has not seen the alarm yet...
        _fill(etcd)
        revision = _revision(etcd)
        # ... when events come, I expect the cause and the fix named in one line, and nothing
        # written: not even the claims of the window that meets the alarm first (etcd 3.4/3.5
        # take writes in nested transactions through it), nor their release.
        svc_world.publish(orders, {"type": "new_order", "id": "b"}, count=5, fresh_ids=True)
        _names_the_alarm(claims)
        assert _revision(etcd) == revision, "etcd took writes through its NOSPACE alarm"
        # The same for replicas started during the alarm with dedup off and with the talk's design
        # (both write their effects to etcd): each names the cause, and nothing is written.
        off, talk = svc_world.service_name("off"), svc_world.service_name("talk")
        [no_dedup] = svc_world.start(off, etcd_endpoints=own.endpoint)
        [talk_dedup] = svc_world.start(talk, enable_etcd=True, dedup_mode="talk", etcd_endpoints=own.endpoint)
        for service in (off, talk):
            svc_world.publish(service, {"type": "new_order", "id": "c"}, count=5, fresh_ids=True)
        for process in (no_dedup, talk_dedup):
            _names_the_alarm(process)
        assert _revision(etcd) == revision, "etcd took writes through its NOSPACE alarm"
        assert len(_processed(svc_world, etcd, orders)) == 5
    finally:
        etcd.close()


def test_kit_status_names_the_nospace_alarm(etcd_factory):
    from nirvana.stack import etcd as etcd_component
    from svc import Etcd
    from svc.config import parse_endpoints

    own = etcd_factory("--quota-backend-bytes", str(8 * 1024 * 1024))
    port = int(own.endpoint.rsplit(":", 1)[1])
    assert etcd_component.probe(port).state == "up"
    # Given an etcd out of space, I expect `./kit status`'s probe to say unhealthy, naming the alarm.
    etcd = Etcd(parse_endpoints(own.endpoint), timeout=10)
    try:
        _fill(etcd)
    finally:
        etcd.close()
    probe = etcd_component.probe(port)
    assert probe.state == "unhealthy" and "NOSPACE" in probe.detail and "etcdctl alarm disarm" in probe.detail


def test_a_claim_lost_while_paused_is_logged_and_counted(svc_world, graphite_url):
    orders = svc_world.service_name("orders")
    # Given a replica whose work (2 s) outlives its claim's lease (1 s) once it is paused...
    # (ETCD_TIMEOUT 10 s, not 2: a CI run at load once saw the late commit time out, counted as
    # dedup_unavailable, instead of being refused for the expired claim, which is what this tests)
    [process] = svc_world.start(orders, enable_etcd=True, claim_ttl=1, work_ms=2000, etcd_timeout=10)
    svc_world.publish(orders, {"type": "new_order", "id": "paused"})
    key = keys.dedup_key(svc_world.prefix, orders, "paused")
    wait_for(lambda: (svc_world.etcd.get(key) or b"").startswith(b"claimed "), "the claim")
    # ... when it is paused (SIGSTOP) until its claim expired, then resumed...
    process.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: svc_world.etcd.get(key) is None, "the claim expired", interval=0.2)
    finally:
        process.signal(signal.SIGCONT)
    # ... its late commit is refused (the effect is written once), and I expect the loss logged
    # with the event id and counted as <service>_dedup_lost.
    wait_for(lambda: svc_world.effects(orders, "paused") == 1 and svc_world.depth(orders) == 0, "the event processed")
    lost = f"stats_counts.{orders}_dedup_lost"
    wait_for(lambda: graphite_total(graphite_url, lost) >= 1, f"{lost} in Graphite", timeout=20, interval=0.5)
    assert "claim on id 'paused' expired" in process.log()
    assert svc_world.effects(orders, "paused") == 1


def test_a_claim_lease_expiring_mid_claim_leaves_no_claim_without_a_lease(svc_world, monkeypatch):
    from svc import Etcd
    from svc.config import parse_endpoints
    from svc.dedup import EtcdDedup, Verdict
    from svc.event import parse
    from test_svc_dedup import drop_the_lease_while_claiming

    etcd = Etcd(parse_endpoints(svc_world.etcd_endpoint))
    dedup = EtcdDedup(etcd, svc_world.prefix, "orders", claim_ttl=1, retention=60)
    try:
        # Given the claim lease revoked in etcd and dropped by the keepalive in the middle of claim()...
        drop_the_lease_while_claiming(monkeypatch, dedup, expire=lambda: etcd.revoke(dedup._lease))
        events = [parse(b'{"type":"new_order","id":"%d"}' % i) for i in range(3)]
        verdicts = dedup.claim(events).result()
        # ... I expect the window refused whole by the real etcd (requeued, claimed again on a new
        # lease), and no claim written without a lease: such a claim would never expire.
        assert verdicts == [Verdict.UNAVAILABLE] * 3
        assert [key for page in etcd.scan_prefix(dedup.key_prefix) for key, _ in page] == []
        assert dedup.claim(events).result() == [Verdict.CLAIMED] * 3
    finally:
        dedup.close()
        etcd.close()


def test_a_copy_meeting_a_claim_an_earlier_window_of_ours_holds_is_not_processed_twice(svc_world):
    from svc import Etcd
    from svc.config import parse_endpoints
    from svc.dedup import EtcdDedup, Verdict
    from svc.event import parse

    etcd = Etcd(parse_endpoints(svc_world.etcd_endpoint))
    dedup = EtcdDedup(etcd, svc_world.prefix, "orders", claim_ttl=10, retention=60)
    try:
        first, again, third = (parse(b'{"type":"new_order","id":"%s"}' % i) for i in (b"w", b"w", b"v"))
        # Given a window of ours working on an event (claimed, not yet committed)...
        assert dedup.claim([first]).result() == [Verdict.CLAIMED]
        # ... when a copy comes in the next window (the consumer claims it while the first commits),
        # I expect it held until that window ends, not claimed again as ours to finish: claimed, its
        # commit would be refused after the first one's (logged as a claim expired, counted lost).
        assert dedup.claim([again]).result() == [Verdict.HELD]
        assert dedup.commit([first]).result() == [Verdict.OK]
        assert dedup.claim([again]).result() == [Verdict.SKIPPED]
        # The same when the first window finishes after etcd answered the copy's claim, before it is read.
        assert dedup.claim([third]).result() == [Verdict.CLAIMED]
        pending = dedup.claim([parse(b'{"type":"new_order","id":"v"}')])
        dedup._claimed.clear()   # as if read after the first window's commit (which pops its claim)...
        dedup.done[b"v"] = third.digest.encode()   # ... and records the id done
        assert pending.result() == [Verdict.SKIPPED]
    finally:
        dedup.close()
        etcd.close()
