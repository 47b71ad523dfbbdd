"""A window's claims and commit against the real etcd: one flat transaction each.

A commit writes, for every event of a part of its window, the done mark (guarded by "the claim
is still mine") and, once for the part, a window record of the effects (svc/effects.py): one
put per event fewer than a done mark and an effect record each (issue 24). What must hold:
the done marks and the window record are one transaction (all or none); an event whose claim was
lost before the commit leaves neither (the rest of its window is committed); a repeat of a
committed id is skipped, by the replica that did it and by one that knows nothing of it. A
window's claims are one flat transaction too ("none of these keys exists", a claim each); a
window one of whose keys exists is claimed again per event, and only that event is not claimed.
"""

import contextlib

from svc import effects, keys
from svc import etcd as _etcd
from svc.dedup import EtcdDedup, Verdict
from svc.nodedup import NoDedup
from svc.event import parse


def _event(event_id: str, kind: str = "new_order"):
    return parse(f'{{"type": "{kind}", "id": "{event_id}", "args": {{"n": 1}}}}'.encode())


@contextlib.contextmanager
def _dedup(client, prefix: str):
    dedup = EtcdDedup(client, prefix, "orders", claim_ttl=5, retention=60)
    dedup.open()
    try:
        yield dedup
    finally:
        dedup.close()


def _revisions(client, prefix) -> dict[bytes, int]:
    """Key -> the revision of its last change, for every key under ``prefix``."""
    request = _etcd._rpc().RangeRequest(key=prefix.encode(), range_end=_etcd.prefix_end(prefix), keys_only=True)
    return {kv.key: kv.mod_revision for kv in client._call("range", "kvstub", "Range", request).kvs}


def test_a_window_commits_its_done_marks_and_one_window_record_in_one_transaction(etcd):
    client, prefix = etcd
    events = [_event("w-1"), _event("w-2", "ban_user"), _event("w/3 \u00e9")]
    with _dedup(client, prefix) as dedup:
        assert dedup.claim(events).result() == [Verdict.CLAIMED] * 3
        assert dedup.commit(events).result() == [Verdict.OK] * 3
    done = _revisions(client, keys.dedup_prefix(prefix, "orders"))
    written = _revisions(client, keys.effects_prefix(prefix, "orders"))
    # One window record for the three events (no record per event), written by the transaction
    # that wrote the three done marks: one revision.
    [window] = written
    assert window.startswith((keys.effects_prefix(prefix, "orders") + effects.WINDOWS).encode())
    assert set(done.values()) == {written[window]} and len(done) == 3
    for event in events:
        assert client.get(keys.dedup_key(prefix, "orders", event.id)) == f"done {event.digest}".encode()
    # Every reader of effects counts it per event.
    assert effects.count(client, "orders", prefix=prefix) == 3
    assert [effects.count(client, "orders", event.id, prefix=prefix) for event in events] == [1, 1, 1]
    assert effects.count(client, "orders", "w", prefix=prefix) == 0
    assert effects.counts_by_id(client, "orders", prefix=prefix) == {"w-1": 1, "w-2": 1, "w/3 \u00e9": 1}
    records = effects.records(client, "orders", prefix=prefix)
    assert [(r["id"], r["type"], r["action"], r["service"]) for r in records] == [
        ("w-1", "new_order", "order recorded", "orders"), ("w-2", "ban_user", "user banned", "orders"),
        ("w/3 \u00e9", "new_order", "order recorded", "orders")]
    assert len({r["at"] for r in records}) == 1 and isinstance(records[0]["pid"], int)


def test_a_replayed_id_is_skipped_by_its_replica_and_by_one_that_never_saw_it(etcd):
    client, prefix = etcd
    event = _event("r-1")
    with _dedup(client, prefix) as dedup:
        assert dedup.claim([event]).result() == [Verdict.CLAIMED]
        assert dedup.commit([event]).result() == [Verdict.OK]
        assert dedup.claim([event]).result() == [Verdict.SKIPPED]   # from its cache
    with _dedup(client, prefix) as fresh:
        fresh.done.clear()                                            # nothing imported: etcd's done mark answers
        assert fresh.claim([event]).result() == [Verdict.SKIPPED]
        changed = parse(b'{"type": "new_order", "id": "r-1", "args": {"n": 2}}')  # same id, another payload
        assert fresh.claim([changed]).result() == [Verdict.CONFLICT]
    assert effects.count(client, "orders", "r-1", prefix=prefix) == 1


def test_a_claim_lost_before_the_commit_leaves_no_done_mark_nor_effect_and_the_rest_commit(etcd):
    client, prefix = etcd
    events = [_event("l-1"), _event("l-2"), _event("l-3")]
    with _dedup(client, prefix) as dedup:
        assert dedup.claim(events).result() == [Verdict.CLAIMED] * 3
        # The claim on l-2 expires (a pause longer than CLAIM_TTL) and a sibling claims it.
        lost = keys.dedup_key(prefix, "orders", "l-2")
        client.put(lost, f"claimed {events[1].digest} 1234")
        # The window's guard fails as a whole (nothing written), then each event alone: only l-2 loses.
        assert dedup.commit(events).result() == [Verdict.OK, Verdict.LOST, Verdict.OK]
    assert client.get(lost) == f"claimed {events[1].digest} 1234".encode()
    assert effects.counts_by_id(client, "orders", prefix=prefix) == {"l-1": 1, "l-3": 1}
    for event_id in ("l-1", "l-3"):
        assert client.get(keys.dedup_key(prefix, "orders", event_id)).startswith(b"done ")
    # The fallback writes each effect beside its done mark, in its own transaction: one revision each.
    done = _revisions(client, keys.dedup_prefix(prefix, "orders"))
    written = _revisions(client, keys.effects_prefix(prefix, "orders"))
    assert len(written) == 2 and not any(key.split(b"/")[-2] == b"~windows" for key in written)
    for event_id in ("l-1", "l-3"):
        [effect] = [key for key in written if key.startswith(keys.effects_prefix(prefix, "orders", event_id).encode())]
        assert written[effect] == done[keys.dedup_key(prefix, "orders", event_id).encode()]


def test_without_dedup_a_window_leaves_one_record_counted_per_event_repeats_included(etcd):
    client, prefix = etcd
    events = [_event("n-1"), _event("n-1"), _event("n-2")]
    effects_off = NoDedup(client, prefix, "orders")
    assert effects_off.commit(events).result() == [Verdict.OK] * 3
    assert effects_off.commit(events[:1]).result() == [Verdict.OK]
    assert len(_revisions(client, keys.effects_prefix(prefix, "orders"))) == 2
    assert effects.counts_by_id(client, "orders", prefix=prefix) == {"n-1": 3, "n-2": 1}
    assert effects.count(client, "orders", prefix=prefix) == 4
    assert effects.count(client, "orders", "n-1", prefix=prefix) == 3


def _claim_requests(client, monkeypatch) -> list:
    """The transactions sent through ``client`` from now on (sent to etcd as they are)."""
    sent, send = [], client.txn_async
    monkeypatch.setattr(client, "txn_async", lambda request: sent.append(request) or send(request))
    return sent


def test_a_window_of_new_events_is_claimed_in_one_flat_transaction(etcd, monkeypatch):
    client, prefix = etcd
    events = [_event("f-1"), _event("f-2"), _event("f/3")]
    with _dedup(client, prefix) as dedup:
        # A start's first window is claimed per event (most often its predecessor's deliveries)...
        assert dedup.claim([_event("f-0")]).result() == [Verdict.CLAIMED]
        # ... and once one found no key, the next ones flat.
        sent = _claim_requests(client, monkeypatch)
        assert dedup.claim(events).result() == [Verdict.CLAIMED] * 3
        lease = dedup._lease
        # Written together: one revision (read before the close revokes the lease and its claims).
        revisions = _revisions(client, keys.dedup_prefix(prefix, "orders"))
        assert len({revisions[key.encode()] for key in (keys.dedup_key(prefix, "orders", e.id) for e in events)}) == 1
    # One transaction: a compare "absent" and a claim put per event at its top level, no nested
    # transaction (etcd parses, checks and applies each of those apart), nothing in its failure branch.
    [request] = sent
    claim_keys = [keys.dedup_key(prefix, "orders", event.id).encode() for event in events]
    assert [(c.key, c.create_revision) for c in request.compare] == [(key, 0) for key in claim_keys]
    assert [op.WhichOneof("request") for op in request.success] == ["request_put"] * 3 and not request.failure
    assert [(op.request_put.key, op.request_put.lease) for op in request.success] == [(k, lease) for k in claim_keys]


def test_a_window_meeting_a_siblings_claim_and_a_done_mark_claims_the_rest(etcd, monkeypatch):
    client, prefix = etcd
    events = [_event("m-1"), _event("m-2"), _event("m-3"), _event("m-4")]
    held, done = (keys.dedup_key(prefix, "orders", event_id) for event_id in ("m-2", "m-3"))
    client.put(held, f"claimed {events[1].digest} 1234")   # a sibling's claim
    client.put(done, f"done {events[2].digest}")           # a sibling's done mark, not in our cache
    with _dedup(client, prefix) as dedup:
        dedup.done.clear()
        assert dedup.claim([_event("m-0")]).result() == [Verdict.CLAIMED]   # a start's window: per event
        sent = _claim_requests(client, monkeypatch)
        # The flat transaction finds keys that exist and writes nothing; the window is claimed
        # again one create-if-absent transaction per event: only those two are not claimed.
        assert dedup.claim(events).result() == [Verdict.CLAIMED, Verdict.HELD, Verdict.SKIPPED, Verdict.CLAIMED]
        assert len(sent) == 2 and all(op.WhichOneof("request") == "request_txn" for op in sent[1].success)
        lease = dedup._lease
        for event_id in ("m-1", "m-4"):
            assert client.get(keys.dedup_key(prefix, "orders", event_id)) == \
                f"claimed {_event(event_id).digest} {lease:x}".encode()
        assert client.get(held) == f"claimed {events[1].digest} 1234".encode()
        assert client.get(done) == f"done {events[2].digest}".encode()
        assert dedup.commit([events[0], events[3]]).result() == [Verdict.OK, Verdict.OK]
        # Keys found come in runs: the next window is claimed per event at once (one transaction,
        # not a flat one that fails first); a window that found none makes the one after it flat.
        sent.clear()   # the commit's
        fresh = [_event("m-5"), _event("m-6")]
        assert dedup.claim(fresh).result() == [Verdict.CLAIMED] * 2
        assert len(sent) == 1 and all(op.WhichOneof("request") == "request_txn" for op in sent[0].success)
        assert dedup.claim([_event("m-7")]).result() == [Verdict.CLAIMED]
        assert len(sent) == 2 and sent[1].success[0].WhichOneof("request") == "request_put"
    assert effects.counts_by_id(client, "orders", prefix=prefix) == {"m-1": 1, "m-4": 1}


def test_a_starts_first_window_is_claimed_per_event_and_finds_its_predecessors_work_in_one_transaction(
        etcd, monkeypatch):
    client, prefix = etcd
    events = [_event("s-1"), _event("s-2")]
    with _dedup(client, prefix) as first:
        assert first.claim(events).result() == [Verdict.CLAIMED] * 2
        assert first.commit(events[:1]).result() == [Verdict.OK]
        # s-2's delivery went back to the queue unfinished (a crash: its claim stays on the lease)
        first._stop.set()
        restarted = EtcdDedup(client, prefix, "orders", claim_ttl=5, retention=60)
        restarted.open()
        try:
            restarted.done.clear()   # its predecessor's done ids not imported yet
            sent = _claim_requests(client, monkeypatch)
            assert restarted.claim(events).result() == [Verdict.SKIPPED, Verdict.HELD]
            assert len(sent) == 1   # per event at once: no flat transaction that fails first
        finally:
            restarted.close()
