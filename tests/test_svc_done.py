"""The done ids a service keeps in memory (svc/done.py): bounded, the newest kept."""

from svc.done import DoneIds


def test_the_newest_bound_ids_are_kept_and_never_more_than_twice_that():
    done = DoneIds(100)
    done.update((f"id-{i}".encode(), b"digest") for i in range(100))
    assert all(f"id-{i}".encode() in done for i in range(100))   # a whole import of `bound` ids stays
    for i in range(100, 1000):
        done[f"id-{i}".encode()] = b"digest"
        assert len(done) <= 200
        assert all(f"id-{j}".encode() in done for j in range(i - 99, i + 1))
    assert done.get(b"id-0") is None and done.get(b"id-999") == b"digest"


def test_a_forgotten_id_is_gone_from_both_generations():
    done = DoneIds(2)
    done[b"a"] = b"1"
    done[b"b"] = b"2"      # the young generation is full: it becomes the old one
    done[b"a"] = b"3"      # now in both
    assert done.pop(b"a") == b"3" and b"a" not in done and done.get(b"b") == b"2"
