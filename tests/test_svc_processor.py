"""Window processing with the in-memory stand-ins svc ships (nirvana.testing): verdicts to outcomes,
repeats in a window, the hooks around the steps (metrics, fault injection)."""

import json

import pytest

from svc import metrics, processor
from svc.protocols import Verdict
from svc.config import Config
from svc.faults import Faults
from svc.hooks import Hook
from svc.outcome import Settlement
from svc.processor import Processor
from svc.service import hooks
from nirvana.testing import MemoryDedup, MemoryMeter


def body(event_id, **args):
    return json.dumps({"type": "new_order", "id": event_id, "args": args}).encode()


def test_repeats_in_one_window_are_processed_once():
    # Given a window with the same event three times, one repeat with another payload, and junk...
    dedup, meter = MemoryDedup(), MemoryMeter()
    outcomes = Processor("orders", dedup, meter).process([body("1"), body("1"), body("2"), body("1"),
                                                          body("1", qty=9), b"junk"])
    # ... I expect one effect per id, the repeats skipped, the other payload a conflict, junk dead.
    assert dedup.effects == ["1", "2"]
    assert [o.action for o in outcomes] == [Settlement.ACK] * 4 + [Settlement.DEAD] * 2
    assert outcomes[4].reason.startswith("conflict")
    assert meter.counts == {metrics.ok("orders", "new_order"): 2, metrics.skipped("orders", "new_order"): 2,
                            metrics.conflict("orders", "new_order"): 1, metrics.invalid("orders"): 1}
    assert [name for name, _ms in meter.timings] == [metrics.timer("orders", "new_order")] * 2
    assert meter.flushes == 1   # once per window


def test_done_before_is_skipped_and_a_live_claim_is_held():
    dedup = MemoryDedup()
    dedup.state = {"done": ("done", _digest("done")), "busy": ("claimed", _digest("busy"))}
    outcomes = Processor("orders", dedup, MemoryMeter()).process([body("done"), body("busy"), body("busy")])
    # A sibling's claim: set aside under its key (svc.held), not requeued; its repeat too.
    assert [(o.action, o.key) for o in outcomes] == [(Settlement.ACK, b""), (Settlement.HOLD, b"busy"),
                                                     (Settlement.HOLD, b"busy")]
    assert dedup.effects == []


def test_etcd_away_fails_closed():
    dedup, meter = MemoryDedup(available=False), MemoryMeter()
    outcomes = Processor("orders", dedup, meter).process([body("1"), body("1"), body("2")])
    # Nothing processed, everything requeued with backoff, counted.
    assert dedup.effects == []
    assert all(o.action is Settlement.REQUEUE and o.backoff for o in outcomes)
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
    dedup, meter = MemoryDedup(), MemoryMeter()
    # ... I expect that body dead-lettered with the reason, counted, and the rest of the window done.
    outcomes = Processor("orders", dedup, meter).process([body("1"), b"trap", body("2")])
    assert [o.action for o in outcomes] == [Settlement.ACK, Settlement.DEAD, Settlement.ACK]
    assert "ValueError: surprise" in outcomes[1].reason
    assert dedup.effects == ["1", "2"] and meter.counts[metrics.invalid("orders")] == 1


def test_an_outcomes_action_is_an_enum_that_logs_as_before():
    # The consumer compares members, not strings; logs and traces print the same words as before.
    outcomes = Processor("orders", MemoryDedup(), MemoryMeter()).process([body("1"), b"junk"])
    assert [type(o.action) for o in outcomes] == [Settlement, Settlement]
    assert [f"{o.action}" for o in outcomes] == ["ack", "dead"]
    assert {member.value for member in Settlement} == {"ack", "dead", "requeue", "hold"}


class Recorder(Hook):
    """Writes down every hook call it gets, by name, with the event ids it was given."""

    def __init__(self):
        self.calls = []

    def after_invalid(self, reason):
        self.calls.append(("after_invalid", reason[:12]))

    def after_claim(self, events):
        self.calls.append(("after_claim", [e.id for e in events]))

    def work(self, events):
        self.calls.append(("work", [e.id for e in events]))

    def after_send(self, events):
        self.calls.append(("after_send", [e.id for e in events]))

    def after_commit(self, events, verdicts):
        self.calls.append(("after_commit", [e.id for e in events], verdicts))

    def after_outcome(self, event, verdict, outcome, elapsed_ms):
        self.calls.append(("after_outcome", event.id, verdict, outcome.action))

    def after_window(self, outcomes):
        self.calls.append(("after_window", len(outcomes)))


class Mailer:
    def __init__(self):
        self.sent = []

    def send(self, events):
        self.sent += [e.id for e in events]


def test_hooks_are_called_around_each_step_in_order():
    # Given a done id, a new one and junk, with a mailer (so the send step happens)
    dedup, recorder = MemoryDedup(), Recorder()
    dedup.state["old"] = ("done", _digest("old"))
    Processor("orders", dedup, MemoryMeter(), hooks=[recorder], mailer=Mailer()).process(
        [body("old"), body("new"), b"junk"])
    # I expect each hook once, in the order of the steps, with the claimed events only
    assert recorder.calls == [
        ("after_invalid", "body is not "),
        ("after_claim", ["new"]), ("work", ["new"]), ("after_send", ["new"]),
        ("after_commit", ["new"], [Verdict.OK]),
        ("after_outcome", "old", Verdict.SKIPPED, Settlement.ACK), ("after_outcome", "new", Verdict.OK, Settlement.ACK),
        ("after_window", 3)]


def test_the_metrics_are_a_hook_replaced_with_the_hooks_given():
    # Given hooks without the metrics hook, I expect nothing counted (and nothing else changed)
    meter = MemoryMeter()
    outcomes = Processor("orders", MemoryDedup(), meter, hooks=[Recorder()]).process([body("1"), b"junk"])
    assert [o.action for o in outcomes] == [Settlement.ACK, Settlement.DEAD]
    assert meter.counts == {} and meter.flushes == 0


class Killed(Exception):
    """What the test's stand-in for SIGKILL raises: the window goes no further, as with the real one."""


@pytest.mark.parametrize(("point", "effects", "sent", "counted"), [
    ("claimed", [], [], {}),                 # nothing written: the claim dies with its lease
    ("sent", [], ["1"], {}),                 # the mail is out, the done mark is not
    ("done", ["1"], ["1"], {}),              # written, not acked (the outcome is not counted yet)
])
def test_a_crash_point_kills_there_after_flushing_the_meter(point, effects, sent, counted):
    # Given the fault hook with CRASH_AT=point (a kill that raises instead of SIGKILL) and junk counted first
    dedup, meter, mailer, order = MemoryDedup(), MemoryMeter(), Mailer(), []
    faults = Faults(crash_at=point, before_kill=lambda: order.append(("flush", dict(meter.counts))),
                    kill=lambda: (order.append("kill"), _raise(Killed())))
    processor_ = Processor("orders", dedup, meter, hooks=[metrics.MetricsHook("orders", meter), faults], mailer=mailer)
    with pytest.raises(Killed):
        processor_.process([b"junk", body("1")])
    # I expect the kill at that point: what was written before it, nothing after; the meter flushed first
    assert (dedup.effects, mailer.sent) == (effects, sent)
    assert order == [("flush", {metrics.invalid("orders"): 1, **counted}), "kill"]


def test_no_crash_and_no_work_when_nothing_is_claimed():
    # Every id known done: no claim, so no work and no crash point reached
    dedup, kills = MemoryDedup(), []
    dedup.state["1"] = ("done", _digest("1"))
    faults = Faults(crash_at="claimed", work_ms=60000, kill=lambda: kills.append(1))
    outcomes = Processor("orders", dedup, MemoryMeter(), hooks=[faults]).process([body("1")])
    assert [o.action for o in outcomes] == [Settlement.ACK] and kills == []


def test_work_ms_stretches_the_work_between_claim_and_commit():
    import time
    dedup = MemoryDedup()
    started = time.monotonic()
    Processor("orders", dedup, MemoryMeter(), hooks=[Faults(work_ms=200)]).process([body("1")])
    assert time.monotonic() - started >= 0.2 and dedup.effects == ["1"]


def test_a_crash_point_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="'later' is not one of claimed, sent, done"):
        Faults(crash_at="later")


@pytest.mark.parametrize(("settings", "installed"), [
    ({}, ["MetricsHook"]),
    ({"CRASH_AT": "claimed"}, ["MetricsHook", "Faults"]),
    ({"WORK_MS": "250"}, ["MetricsHook", "Faults"]),
])
def test_the_service_installs_fault_injection_only_when_asked(settings, installed):
    config = Config.from_env({"SERVICE_NAME": "orders", **settings})
    meter = MemoryMeter()
    got = hooks(config, meter)
    assert [type(hook).__name__ for hook in got] == installed
    if len(got) == 2:
        assert (got[1].crash_at, got[1].work_ms) == (config.crash_at, config.work_ms)
        assert got[1].before_kill == meter.flush


def _raise(error):
    raise error


def test_a_held_delivery_waits_at_most_the_dedups_claim_ttl_and_is_released_with_the_claim():
    # Given a processor whose deduplication's claims live 7 s (found: the processor read claim_ttl
    # with getattr, and the in-memory stand-in had none, so this path never ran in a unit test)
    dedup = MemoryDedup(claim_ttl=7)
    processor = Processor("orders", dedup, MemoryMeter())
    held = processor.held()
    # I expect a delivery held for a sibling's claim to wait claim_ttl (and a little) at most...
    assert held.retry_after == 7.5
    assert held.hold(b"busy", "delivery", owner="tag", now=0.0)
    assert held.due(now=7.4) == [] and held.due(now=7.6) == ["delivery"]
    # ... and the dedup's releases to reach the held deliveries (on_release is the held set's)
    assert dedup.on_release == held.release


def test_abandoned_windows_let_go_of_their_claims_for_a_sibling():
    # Given two replicas sharing one store: the first begins a window (its claims sent), then its
    # broker channel goes (found: abandon was reached with getattr; the stand-in had none)
    shared: dict = {}
    first, sibling = MemoryDedup(state=shared), MemoryDedup(state=shared)
    released: list[bytes] = []
    processor = Processor("orders", first, MemoryMeter())
    processor.held()
    first.on_release = released.append
    processor.begin([body("1"), body("2")])   # claims sent; never proceeded nor finished
    assert sibling.claim([_parse("1")]).result() == [Verdict.HELD]
    # When the consumer abandons the windows begun so far
    processor.abandon()
    # I expect the claims gone (each one told), so the sibling given the redelivery processes it
    assert sorted(released) == [b"1", b"2"] and first.claims == {}
    assert sibling.claim([_parse("1"), _parse("2")]).result() == [Verdict.CLAIMED, Verdict.CLAIMED]


def test_a_finished_window_keeps_nothing_to_abandon():
    dedup = MemoryDedup()
    processor = Processor("orders", dedup, MemoryMeter())
    processor.process([body("1")])
    processor.abandon()
    assert dedup.state == {"1": ("done", _digest("1"))} and dedup.effects == ["1"]


def _parse(event_id):
    from svc.event import parse
    return parse(body(event_id))
