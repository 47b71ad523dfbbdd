"""Held deliveries (svc.held): pure logic, times given explicitly."""

from svc.held import RECENT, Held


def test_a_held_delivery_waits_for_its_release_or_its_deadline():
    held = Held(retry_after=10)
    # Given two deliveries held for a sibling's claim on key a, one for key b...
    held.hold(b"a", "a1", now=0)
    held.hold(b"a", "a2", now=1)
    held.hold(b"b", "b1", now=1)
    # ... nothing is due while the claims live.
    assert held.due(now=5) == [] and len(held) == 3
    # When the watch sees a's claim deleted, both copies of a are due, b still waits.
    held.release(b"a", now=6)
    assert held.due(now=6) == ["a1", "a2"] and len(held) == 1
    # When b's wait is over (its claim's lease must have ended by then), b is due: it is tried again.
    assert held.due(now=10.9) == []
    assert held.due(now=11) == ["b1"] and len(held) == 0


def test_a_release_just_before_the_hold_is_not_missed():
    held = Held(retry_after=10)
    # Given the watch saw the claim end before the window that met it settled...
    held.release(b"a", now=100)
    held.hold(b"a", "a1", now=100.5)
    # ... the delivery is due at once, not after a whole claim TTL.
    assert held.due(now=100.5) == ["a1"]
    # An old release does not count.
    held.hold(b"a", "a2", now=100 + RECENT + 1)
    assert held.due(now=100 + RECENT + 1) == []


def test_held_again_after_a_whole_wait_goes_back_to_the_queue():
    held = Held(retry_after=10)
    # Given a delivery whose wait ended by its deadline (the claim's owner is alive and kept it)...
    assert held.hold(b"a", "a1", now=0)
    assert held.due(now=10) == ["a1"]
    # ... when it is held again, I expect it requeued instead (the owner may need the delivery to
    # finish the claim), and the next time held again.
    assert not held.hold(b"a", "a1", now=10)
    assert held.hold(b"a", "a1", now=11)
    # A delivery released by the watch is held again as usual.
    held.release(b"a", now=12)
    assert held.due(now=12) == ["a1"]
    assert held.hold(b"a", "a1", now=12)


def test_only_the_last_recent_seconds_of_releases_are_remembered():
    held = Held(retry_after=10)
    # Given the watch releasing every key a busy service marks done (5,000 in a second)...
    for i in range(5000):
        held.release(f"old-{i}".encode(), now=i / 5000)
    # ... when releases go on after RECENT seconds, I expect the old ones forgotten as they come
    # (each release drops the expired ones from the front), not kept until some high-water mark.
    held.release(b"new", now=1 + RECENT)
    assert list(held._released) == [b"new"]
    # A key released again moves to the back, with its new time: it is remembered from then on.
    held.release(b"a", now=2 + RECENT)
    held.release(b"new", now=2.5 + RECENT)
    held.release(b"b", now=2.5 + 2 * RECENT - 0.1)
    assert list(held._released) == [b"new", b"b"]
    held.hold(b"new", "n1", now=3.5 + RECENT)
    assert held.due(now=3.5 + RECENT) == ["n1"]


def test_an_owner_waits_since_its_first_hold_until_none_of_its_deliveries_waits():
    held = Held(retry_after=10)
    assert held.waiting_since("a") is None
    held.hold(b"k1", "d1", now=100.0, owner="a")
    held.hold(b"k2", "d2", now=101.0, owner="a")   # a later hold: still waiting since 100
    held.hold(b"k3", "d3", now=102.0, owner="b")
    assert (held.waiting_since("a"), held.waiting_since("b")) == (100.0, 102.0)
    held.release(b"k1", now=103.0)
    assert held.due(now=103.0) == ["d1"] and held.waiting_since("a") == 100.0   # d2 waits on, unbroken
    held.release(b"k2", now=104.0)
    assert held.due(now=104.0) == ["d2"] and held.waiting_since("a") is None
    held.hold(b"k4", "d4", now=105.0, owner="a")    # a new wait begins
    assert held.waiting_since("a") == 105.0 and held.waiting_since("b") == 102.0


class _Unscanned(dict):
    """A held set's waiting deliveries that fail the test when they are scanned."""

    def __iter__(self):
        raise AssertionError("the waiting deliveries were scanned")

    def keys(self):
        raise AssertionError("the waiting deliveries were scanned")


def test_asking_what_is_due_before_the_earliest_deadline_scans_nothing():
    held = Held(retry_after=100)
    # Given 500 deliveries held for a dead sibling's window (their claims live on for CLAIM_TTL)...
    for i in range(500):
        held.hold(f"k{i}".encode(), f"d{i}", now=i / 1000)
    # ... when the consumer asks what is due at every turn of its loop before any deadline, I expect
    # no scan of the 500 (before: every key at every turn, about 1% of the survivor's loop).
    waiting, held._waiting = held._waiting, _Unscanned(held._waiting)
    assert held.due(now=5) == [] and held.due(now=99.99) == []
    held._waiting = waiting
    # A release makes its delivery due at once; the others still wait until their own deadlines.
    held.release(b"k7", now=99.99)
    assert held.due(now=99.99) == ["d7"] and len(held) == 499
    waiting, held._waiting = held._waiting, _Unscanned(held._waiting)
    assert held.due(now=99.999) == []
    held._waiting = waiting
    assert held.due(now=100.0085) == ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d8"]
    assert held.due(now=float("inf"))[-1] == "d499" and len(held) == 0
