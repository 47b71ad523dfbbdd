"""Window processing with an in-memory stand-in for etcd: verdicts to outcomes, repeats in a window."""

import json

from svc import metrics, processor
from svc.dedup import Verdict
from svc.processor import Processor


class Meter:
    def __init__(self):
        self.counts, self.timings = {}, []

    def incr(self, name, count=1):
        self.counts[name] = self.counts.get(name, 0) + count

    def timing(self, name, ms):
        self.timings.append(name)

    def flush(self):
        pass


class Done:
    def __init__(self, verdicts):
        self._verdicts = verdicts

    def result(self):
        return self._verdicts


class MemoryDedup:
    """Claims and done marks in a dict, the way EtcdDedup keeps them in etcd."""

    enabled = True

    def __init__(self, available=True):
        self.state, self.effects, self.available = {}, [], available

    def claim(self, events):
        verdicts = []
        for event in events:
            held = self.state.get(event.id)
            if not self.available:
                verdicts.append(Verdict.UNAVAILABLE)
            elif held is None:
                self.state[event.id] = ("claimed", event.digest)
                verdicts.append(Verdict.CLAIMED)
            elif held[1] != event.digest:
                verdicts.append(Verdict.CONFLICT)
            else:
                verdicts.append(Verdict.SKIPPED if held[0] == "done" else Verdict.HELD)
        return Done(verdicts)

    def claim_key(self, event):
        return event.id.encode()

    def commit(self, events):
        for event in events:
            self.state[event.id] = ("done", event.digest)
            self.effects.append(event.id)
        return Done([Verdict.OK] * len(events))


def body(event_id, **args):
    return json.dumps({"type": "new_order", "id": event_id, "args": args}).encode()


def test_repeats_in_one_window_are_processed_once():
    # Given a window with the same event three times, one repeat with another payload, and junk...
    dedup, meter = MemoryDedup(), Meter()
    outcomes = Processor("orders", dedup, meter).process([body("1"), body("1"), body("2"), body("1"),
                                                          body("1", qty=9), b"junk"])
    # ... I expect one effect per id, the repeats skipped, the other payload a conflict, junk dead.
    assert dedup.effects == ["1", "2"]
    assert [o.action for o in outcomes] == ["ack", "ack", "ack", "ack", "dead", "dead"]
    assert outcomes[4].reason.startswith("conflict")
    assert meter.counts == {metrics.ok("orders", "new_order"): 2, metrics.skipped("orders", "new_order"): 2,
                            metrics.conflict("orders", "new_order"): 1, metrics.invalid("orders"): 1}
    assert meter.timings == [metrics.timer("orders", "new_order")] * 2


def test_done_before_is_skipped_and_a_live_claim_is_held():
    dedup = MemoryDedup()
    dedup.state = {"done": ("done", _digest("done")), "busy": ("claimed", _digest("busy"))}
    outcomes = Processor("orders", dedup, Meter()).process([body("done"), body("busy"), body("busy")])
    # A sibling's claim: set aside under its key (svc.held), not requeued; its repeat too.
    assert [(o.action, o.key) for o in outcomes] == [("ack", b""), ("hold", b"busy"), ("hold", b"busy")]
    assert dedup.effects == []


def test_etcd_away_fails_closed():
    dedup, meter = MemoryDedup(available=False), Meter()
    outcomes = Processor("orders", dedup, meter).process([body("1"), body("1"), body("2")])
    # Nothing processed, everything requeued with backoff, counted.
    assert dedup.effects == []
    assert all(o.action == "requeue" and o.backoff for o in outcomes)
    assert meter.counts == {metrics.dedup_unavailable("orders"): 3}


def _digest(event_id):
    from svc.event import parse
    return parse(body(event_id)).digest


def test_a_body_parse_fails_on_unexpectedly_is_dead_lettered_not_a_crash(monkeypatch):
    # Given a parse that fails with something other than InvalidEvent (a bug, a new edge case)...
    real_parse = processor.parse

    def parse(raw):
        if raw == b"trap":
            raise ValueError("surprise")
        return real_parse(raw)

    monkeypatch.setattr(processor, "parse", parse)
    dedup, meter = MemoryDedup(), Meter()
    # ... I expect that body dead-lettered with the reason, counted, and the rest of the window done.
    outcomes = Processor("orders", dedup, meter).process([body("1"), b"trap", body("2")])
    assert [o.action for o in outcomes] == ["ack", "dead", "ack"]
    assert "ValueError: surprise" in outcomes[1].reason
    assert dedup.effects == ["1", "2"] and meter.counts[metrics.invalid("orders")] == 1
