"""nirvana.outages against a throwaway etcd: a claim's lease read without refreshing it, the
countdown ending when the id is done."""

import json
import shutil
import threading

import pytest
from conftest import need

import nirvana
from nirvana import outages
from nirvana.errors import StackError
from nirvana.own_etcd import OwnEtcd
from nirvana import own_etcd, testing
from svc import effects as svc_effects
from svc import keys
from svc import etcd as _etcd
from svc.etcd import Etcd
from svc.config import parse_endpoints
from svc.event import parse as parse_event


@pytest.fixture
def own():
    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    etcd = OwnEtcd().start()
    yield etcd
    etcd.close()


def test_a_claim_counts_down_and_the_watch_ends_when_done(own):
    etcd = Etcd(parse_endpoints(own.endpoint))
    try:
        lease = etcd.grant(5)
        key = keys.dedup_key("/nirvana", "orders", "a-1")
        etcd.put(key, f"claimed d1 {lease:x}".encode(), lease)
        assert outages.dedup_value(own.endpoint, "orders", "a-1") == f"claimed d1 {lease:x}"
        assert 3 <= outages.lease_left(own.endpoint, f"{lease:x}") <= 5
        # Reading the lease does not refresh it (a keepalive would): it keeps going down.
        lines = []
        threading.Timer(1.5, lambda: etcd.put(key, b"done d1")).start()
        assert outages.watch_claim(own.endpoint, "orders", "a-1", timeout=10, progress=lines.append) == "done d1"
        assert lines[0].startswith(f"a-1: claimed, lease {lease:x} has ") and lines[-1] == "a-1: done"
        assert outages.lease_left(own.endpoint, f"{lease:x}") <= 4
        etcd.revoke(lease)
        assert outages.lease_left(own.endpoint, f"{lease:x}") == -1
        assert outages.dedup_value(own.endpoint, "orders", "nobody") is None
    finally:
        etcd.close()


def test_a_claim_whose_lease_ended_says_so_never_a_negative_countdown(own):
    # Given a claim still in etcd after its lease ended (etcd answers TTL -1 for a lease it no
    # longer has; the key goes a moment later), I expect the watch to say the lease ended, not
    # "-1 s left", and then the done mark.
    etcd = Etcd(parse_endpoints(own.endpoint))
    try:
        lease = etcd.grant(5)
        etcd.revoke(lease)
        key = keys.dedup_key("/nirvana", "orders", "a-2")
        etcd.put(key, f"claimed d1 {lease:x}".encode())
        lines = []
        threading.Timer(1.5, lambda: etcd.put(key, b"done d1")).start()
        assert outages.watch_claim(own.endpoint, "orders", "a-2", timeout=10, progress=lines.append) == "done d1"
        assert not [line for line in lines if "-1" in line], lines
        assert lines[0] == f"a-2: claimed, lease {lease:x} ended (etcd removes the claim with it)"
        assert lines[-1] == "a-2: done"
    finally:
        etcd.close()


def test_the_own_etcd_restarts_on_its_data_and_is_gone_after_close(own):
    etcd = Etcd(parse_endpoints(own.endpoint))
    try:
        etcd.put(b"/k", b"v")
        own.restart()
        assert etcd.get(b"/k") == b"v"
    finally:
        etcd.close()
    data = own.data_dir
    own.close()
    assert not own.running and not data.exists()


def test_one_throwaway_etcd_serves_the_kit_and_the_tests(monkeypatch):
    # One implementation (nirvana.own_etcd) for the chapters and the tests; a missing binary is the kit's error
    assert testing.OwnEtcd is own_etcd.OwnEtcd is OwnEtcd is nirvana.OwnEtcd
    monkeypatch.setattr(own_etcd.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="etcd is not installed: run ./kit setup"):
        OwnEtcd()


def test_the_own_etcd_takes_extra_flags_and_a_data_dir_it_keeps(tmp_path):
    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    etcd = OwnEtcd("--max-txn-ops", "4", data_dir=tmp_path / "etcd").start()
    client = Etcd(parse_endpoints(etcd.endpoint))
    try:
        request = _etcd.new_txn()
        for i in range(5):
            _etcd.add_put(request.success, f"/k{i}".encode(), b"v")
        with pytest.raises(_etcd.TxnTooLarge, match="too many operations"):
            client.txn(request)
    finally:
        client.close()
        etcd.close()
    assert (tmp_path / "etcd" / "data").is_dir()   # a data dir given is the caller's: kept


def test_wait_consuming_gives_up_with_what_it_saw(amqp_url):
    # A queue nobody consumes: the wait ends at its deadline, naming the queue and the count seen.
    with pytest.raises(TimeoutError, match=r"1 consumer\(s\) on events\.t-none-queue.*saw 0 \(no such queue events\.t-none-queue\)"):
        outages.wait_consuming("t-none-queue", timeout=0.5, progress=lambda line: None)


def _record(etcd, event_id: str) -> None:
    event = parse_event(json.dumps({"type": "new_order", "id": event_id}).encode())
    etcd.put(svc_effects.effect_key("/nirvana", "orders", event).encode(),
             svc_effects.record("orders", event).encode())


def test_wait_processed_waits_for_every_id_not_an_empty_queue(own):
    # Three of four ids done, one of them twice; the fourth lands later: the wait returns only then,
    # and the tally names the duplicate; a fifth id that never comes makes it give up with the count
    # seen. (The duplicate is written before the wait: two late writes could be seen one at a time.)
    etcd = Etcd(parse_endpoints(own.endpoint))
    try:
        for event_id in ("d-0", "d-1", "d-2", "d-2"):
            _record(etcd, event_id)
        late = threading.Timer(1.0, lambda: _record(etcd, "d-3"))
        late.start()
        lines = []
        ids = ["d-0", "d-1", "d-2", "d-3"]
        seen = outages.wait_processed(own.endpoint, "orders", ids, timeout=10, progress=lines.append)
        late.join()
        assert seen == outages.Tally(published=4, processed=4, once=3, twice=1)
        assert str(seen) == "4 published, 4 processed, 3 once, 1 twice" and lines[-1] == f"orders: {seen}"
        with pytest.raises(TimeoutError, match="4 processed, 3 once, 1 twice"):
            outages.wait_processed(own.endpoint, "orders", [*ids, "d-4"], timeout=0.5, progress=lines.append)
    finally:
        etcd.close()


def test_tally_counts_each_id_once_and_only_the_ids_asked():
    counts = {"a": 1, "b": 2, "other": 1}
    assert outages.tally(["a", "b", "c", "a"], counts) == outages.Tally(published=3, processed=2, once=1, twice=1)
    assert outages.tally(["a", "b", "c"], counts).missing == 1
