"""svc.acks.Open's acks on a channel that no longer consumes (pure logic: a channel that records
what it is told; the real broker's side is tests/test_svc_held_acks.py)."""

from types import SimpleNamespace

from svc import acks


class Recorder:
    """Stands in for a pika BlockingChannel: the acks sent on it, as (tag, multiple)."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))


def _deliveries(open_: acks.Open, tag: str, tags) -> list:
    methods = [SimpleNamespace(consumer_tag=tag, delivery_tag=t) for t in tags]
    for method in methods:
        open_.add(method)
    return methods


def test_done_deliveries_above_a_held_one_on_an_old_channel_wait_for_one_ack_multiple(monkeypatch):
    monkeypatch.setattr(acks.amqp, "ack_each", lambda channel, tags: channel.acks.extend((t, False) for t in tags))
    open_, old, new = acks.Open(), Recorder(), Recorder()
    # Given tags 1-3 held on a channel, 4-9 received on it too, then a hand-over to a new channel...
    open_.consuming("a", old)
    held = _deliveries(open_, "a", range(1, 4))
    rest = _deliveries(open_, "a", range(4, 10))
    open_.consuming("b", new)
    # ... when 4-9 are done, in two windows, I expect no ack yet (a held tag lies below them)...
    open_.ack(rest[:3])
    open_.ack(rest[3:])
    assert old.acks == [] and open_.count(old) == 9
    # ... when held 2 is requeued by the caller and 1 acked, 1 alone, still nothing may cover 4-9...
    open_.settled(held[1])
    open_.ack([held[0]])
    assert old.acks == [(1, True)]
    # ... and when the last held one comes due and is done, one ack "multiple" covers all the rest
    open_.ack([held[2]])
    assert old.acks == [(1, True), (9, True)] and open_.count(old) == 0
    assert open_.drained(new) == [old]


def test_what_waits_on_an_old_channel_is_acked_one_by_one_at_the_stop(monkeypatch):
    monkeypatch.setattr(acks.amqp, "ack_each", lambda channel, tags: channel.acks.extend((t, False) for t in tags))
    open_, old, new = acks.Open(), Recorder(), Recorder()
    open_.consuming("a", old)
    _deliveries(open_, "a", [1])
    rest = _deliveries(open_, "a", [2, 3])
    open_.consuming("b", new)
    current = _deliveries(open_, "b", [1, 2])
    # Given 2-3 done above held 1 on the old channel, and the new channel's window done...
    open_.ack(rest)
    open_.ack(current)
    assert old.acks == [] and new.acks == [(2, True)]
    # ... I expect the stop to ack 2 and 3 one by one (1, held, goes back to the queue with its channel).
    open_.flush()
    assert old.acks == [(2, False), (3, False)] and open_.count(old) == 1
