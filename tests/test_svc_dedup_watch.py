"""What the dedup watch is for, and what it leaves to the claims and commits (issue 24).

The watch streams back every put under the service's prefix, our own claims and done marks too (two
per event). It learns only what is new to the cache: a sibling's done mark, a deleted key. A done
mark known already (our commit's, or read in a claim's answer) releases the copies held for it
where it is learnt, so the watch has nothing to do for it.
"""

import contextlib

from nirvana.testing import wait_for
from svc.protocols import Verdict


@contextlib.contextmanager
def _dedups(svc_world, *, watching: bool):
    """(etcd, ours, sibling, released): two EtcdDedup of one service on one etcd client, ours
    recording the keys it releases; all closed at the end."""
    from svc import Etcd
    from svc.config import parse_endpoints
    from svc.dedup import EtcdDedup

    etcd = Etcd(parse_endpoints(svc_world.etcd_endpoint))
    ours = EtcdDedup(etcd, svc_world.prefix, "orders", claim_ttl=10, retention=60)
    sibling = EtcdDedup(etcd, svc_world.prefix, "orders", claim_ttl=10, retention=60)
    released: list[bytes] = []
    ours.on_release = released.append
    try:
        if watching:
            ours.open()
        yield etcd, ours, sibling, released
    finally:
        ours.close()
        sibling.close()
        etcd.close()


def _event(event_id: str):
    from svc.event import parse
    return parse(b'{"type":"new_order","id":"%s"}' % event_id.encode())


def test_a_copy_held_for_a_window_of_ours_is_released_by_that_windows_commit(svc_world):
    with _dedups(svc_world, watching=False) as (etcd, ours, sibling, released):
        # Given a window of ours working on an event, and a copy of it held for that window...
        first, copy = _event("w"), _event("w")
        assert ours.claim([first]).result() == [Verdict.CLAIMED]
        assert ours.claim([copy]).result() == [Verdict.HELD]
        assert released == []
        # ... when the window commits, I expect the copy released at once, by the commit itself (the
        # watch skips our own done marks; none runs here), and then skipped.
        assert ours.commit([first]).result() == [Verdict.OK]
        assert released == [ours.claim_key(first)]
        assert ours.claim([copy]).result() == [Verdict.SKIPPED]
        # A window of ours that no copy waited for releases nothing.
        other = _event("v")
        assert ours.claim([other]).result() == [Verdict.CLAIMED]
        assert ours.commit([other]).result() == [Verdict.OK]
        assert released == [ours.claim_key(first)]


def test_a_claim_that_finds_a_siblings_done_mark_releases_the_copies_held_for_it(svc_world):
    with _dedups(svc_world, watching=False) as (etcd, ours, sibling, released):
        # Given an event a sibling claimed and marked done...
        event = _event("s")
        assert sibling.claim([event]).result() == [Verdict.CLAIMED]
        assert sibling.commit([event]).result() == [Verdict.OK]
        # ... when a claim of ours finds its done mark, I expect the event skipped and its key
        # released: the watch, which finds that done mark in the cache then, would not tell.
        assert ours.claim([_event("s")]).result() == [Verdict.SKIPPED]
        assert released == [ours.claim_key(event)]


def test_the_watch_releases_a_siblings_work_and_skips_our_own_done_marks(svc_world):
    with _dedups(svc_world, watching=True) as (etcd, ours, sibling, released):
        # Given an event we processed, then one a sibling processed (later in etcd's history)...
        mine, theirs = _event("mine"), _event("theirs")
        assert ours.claim([mine]).result() == [Verdict.CLAIMED]
        assert ours.commit([mine]).result() == [Verdict.OK]
        assert sibling.claim([theirs]).result() == [Verdict.CLAIMED]
        assert sibling.commit([theirs]).result() == [Verdict.OK]
        # ... I expect the watch to learn the sibling's done mark and release its key...
        wait_for(lambda: ours.claim_key(theirs) in released, "the sibling's done mark learnt")
        assert ours.done.get(theirs.key) == theirs.digest.encode()
        # ... and to have passed over our own claim and done mark (nothing held for them).
        assert released == [ours.claim_key(theirs)]
        # A sibling's claim deleted (released) is learnt too.
        gone = _event("gone")
        assert sibling.claim([gone]).result() == [Verdict.CLAIMED]
        sibling.release([gone])
        wait_for(lambda: ours.claim_key(gone) in released, "the sibling's released claim learnt")
