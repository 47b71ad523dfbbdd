"""Chapter 3's narrative, checked against the real etcd: after a restart, the claim alone skips a
repeat (create-if-absent finds the done mark); the ids imported at start are a cache that saves
that round trip. Each test uses its own etcd prefix and deletes it afterwards."""



from svc import keys
from svc.etcd import Etcd
from svc.dedup import EtcdDedup, Verdict
from svc.event import parse

EVENT = b'{"type": "new_order", "id": "123"}'


class CountingEtcd:
    """The real etcd client, counting the transactions sent (the round trips a claim costs)."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd, self.txns = etcd, 0

    def txn_async(self, request):
        self.txns += 1
        return self._etcd.txn_async(request)

    def __getattr__(self, name):
        return getattr(self._etcd, name)


def started(client, prefix: str) -> EtcdDedup:
    """A service's dedup as ``python -m svc`` opens it at start (the import included)."""
    dedup = EtcdDedup(CountingEtcd(client), prefix, "orders", claim_ttl=10, retention=60)
    dedup.open()
    return dedup


def test_after_a_restart_the_claim_skips_a_repeat_and_the_import_only_saves_the_round_trip(etcd):
    client, prefix = etcd
    event = parse(EVENT)
    # Given orders processed event 123 with dedup on (claim, then done mark and effect)
    first = started(client, prefix)
    assert first.claim([event]).result() == [Verdict.CLAIMED]
    assert first.commit([event]).result() == [Verdict.OK]
    first.close()
    encoded = keys.encode_id("123").encode()

    # When a restarted service has imported nothing (its cache emptied), I expect the repeat skipped
    # anyway: the create-if-absent claim finds the done mark, one transaction sent
    forgetful = started(client, prefix)
    forgetful.done.clear()
    assert forgetful.claim([event]).result() == [Verdict.SKIPPED]
    assert forgetful.etcd.txns == 1
    assert encoded in forgetful.done   # and it remembers the answer for the next repeat
    forgetful.close()

    # When it imports its done ids at start (what svc does), the repeat is skipped from memory,
    # no transaction sent: the import is a cache saving that round trip
    restarted = started(client, prefix)
    assert encoded in restarted.done
    assert restarted.claim([event]).result() == [Verdict.SKIPPED]
    assert restarted.etcd.txns == 0
    restarted.close()


def _done_marks(client, prefix: str, count: int) -> None:
    """``count`` done marks of orders (ids ``done-<i>``, payload {"type": "new_order"}), 128 a transaction."""
    from svc import etcd as _etcd

    for start in range(0, count, 128):
        request = _etcd.new_txn()
        for i in range(start, min(start + 128, count)):
            digest = parse(f'{{"type": "new_order", "id": "done-{i}"}}'.encode()).digest
            _etcd.add_put(request.success, keys.dedup_key(prefix, "orders", f"done-{i}").encode(), f"done {digest}".encode())
        client.txn(request)


def test_more_done_ids_than_the_cache_holds_are_not_imported_and_a_repeat_is_still_skipped(etcd, monkeypatch, caplog):
    import logging

    from svc import done

    client, prefix = etcd
    # Given a cache of 100 done ids and 150 done marks of orders in etcd (a busy day's million
    # took 18 s and 218 MB to import, and the kit gave up waiting for the service)...
    monkeypatch.setattr(done, "DONE_CACHE", 100)
    _done_marks(client, prefix, 150)
    # ... when the service starts, I expect none imported (etcd's count alone), and it said so...
    with caplog.at_level(logging.INFO, logger="svc.dedup"):
        dedup = started(client, prefix)
    try:
        assert len(dedup.done) == 0
        assert "imported none of the 150 done ids" in caplog.text
        # ... and a repeat still skipped, found by its claim (one transaction), one with another
        # payload a conflict: the cache never was the guarantee.
        repeat, other = parse(b'{"type": "new_order", "id": "done-7"}'), parse(b'{"type": "ban_user", "id": "done-8"}')
        assert dedup.claim([repeat, other]).result() == [Verdict.SKIPPED, Verdict.CONFLICT]
        assert dedup.etcd.txns == 1
        # When it processes 300 new events, I expect at most 200 done ids kept in memory, the newest
        # 100 among them.
        fresh = [parse(f'{{"type": "new_order", "id": "new-{i}"}}'.encode()) for i in range(300)]
        assert dedup.claim(fresh).result() == [Verdict.CLAIMED] * 300
        assert dedup.commit(fresh).result() == [Verdict.OK] * 300
        assert len(dedup.done) <= 200
        assert all(keys.encode_id(f"new-{i}").encode() in dedup.done for i in range(200, 300))
        assert dedup.claim(fresh[-1:]).result() == [Verdict.SKIPPED]
    finally:
        dedup.close()


def test_a_slow_import_does_not_hold_the_start_and_a_repeat_meanwhile_is_found_by_its_claim(etcd, monkeypatch):
    import threading

    from nirvana.testing import wait_for

    client, prefix = etcd
    event, other = parse(EVENT), parse(b'{"type": "new_order", "id": "456"}')
    first = started(client, prefix)
    assert first.claim([event, other]).result() == [Verdict.CLAIMED] * 2
    assert first.commit([event, other]).result() == [Verdict.OK] * 2
    first.close()
    # Given an import of the done ids that takes 5 s (a million of them on a busy etcd took 18 s,
    # and the kit's readiness wait gave up at 10 s)...
    release = threading.Event()
    real_import = EtcdDedup._import
    monkeypatch.setattr(EtcdDedup, "_import", lambda self: (release.wait(5), real_import(self))[1])
    # ... when the service starts, I expect it to return before the import ended (IMPORT_WAIT)...
    restarted = started(client, prefix)
    try:
        assert keys.encode_id("456").encode() not in restarted.done, "the start waited for the import"
        # ... a repeat claimed meanwhile skipped all the same (its claim finds the done mark)...
        assert restarted.claim([event]).result() == [Verdict.SKIPPED]
        assert restarted.etcd.txns == 1
        # ... and the import, once let go, fills the cache.
        release.set()
        wait_for(lambda: keys.encode_id("456").encode() in restarted.done, "the import to end", timeout=10)
    finally:
        release.set()
        restarted.close()
