"""A window's commit against the real etcd: one transaction of done marks and one window record.

A commit writes, for every event of a part of its window, the done mark (guarded by "the claim
is still mine") and, once for the part, a window record of the effects (svc/effects.py): one
put per event fewer than a done mark and an effect record each (issue 24). What must hold:
the done marks and the window record are one transaction (all or none); an event whose claim was
lost before the commit leaves neither (the rest of its window is committed); a repeat of a
committed id is skipped, by the replica that did it and by one that knows nothing of it.
"""

import contextlib

from svc import effects, keys
from svc import etcd as _etcd
from svc.dedup import EtcdDedup, NoDedup, Verdict
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
