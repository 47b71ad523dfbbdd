"""nirvana.cost: ratios per round, the table and the chart (pure); one small live measurement."""

import json
import re

import pytest

import matplotlib

matplotlib.use("Agg")

from nirvana import cost, prune  # noqa: E402
from nirvana.errors import MeasureError  # noqa: E402
from nirvana.stack.carbon import whisper_dir  # noqa: E402

# two rounds: bare, off, bare, on, bare, then bare, on, bare, off, bare
RATES = {"bare pika": [1000.0, 1000.0, 2000.0, 2000.0, 1000.0, 3000.0],
         "svc, dedup off": [1500.0, 600.0], "svc, dedup on": [750.0, 1200.0]}
RATIOS = {"svc, dedup off": [1.5, 0.3], "svc, dedup on": [0.5, 0.8]}
LATENCIES = {"svc, dedup off": [1.0, 2.0, 3.0], "svc, dedup on": [8.0, 9.0, 10.0]}
STEPS = {"svc, dedup off": {"delivery": 1.0, "work": 0.1, "done mark + effect": 0.5, "ack": 0.4},
         "svc, dedup on": {"delivery": 1.0, "claim": 3.0, "work": 0.1, "done mark + effect": 2.0, "ack": 0.9}}


def measured_cost() -> cost.Cost:
    return cost.Cost(2000, RATES, RATIOS, LATENCIES, STEPS, 1.25)


def test_each_svc_run_is_set_against_the_bare_runs_around_it():
    # Given a busy machine (the bare loop ran 1,000 then 2,000 events/s), I expect a contender's
    # figure to be its rate over the mean of the bare runs just before and after it, per round;
    # the median of the rounds and the lowest side by side (how sure the figure is)
    measured = measured_cost()
    assert measured.rounds == 2
    assert measured.rate("bare pika") == 1500.0
    assert measured.ratio("svc, dedup off") == 0.9 and measured.lowest_ratio("svc, dedup off") == 0.3
    assert measured.ratio("svc, dedup on") == 0.65 and measured.lowest_ratio("svc, dedup on") == 0.5
    assert measured.ratio("bare pika") == 1.0
    assert measured.latency("svc, dedup on") == 9.0


def test_table_steps_and_chart_show_each_contender_with_how_sure_it_is():
    measured = measured_cost()
    lines = measured.table().splitlines()
    assert lines[1].split() == ["bare", "pika", "1,500", "(1,000)", "the", "yardstick"]
    assert lines[2].split() == ["svc,", "dedup", "off", "1,050", "(600)", "0.90x", "(0.30x)", "2.0", "ms"]
    assert lines[3].split() == ["svc,", "dedup", "on", "975", "(750)", "0.65x", "(0.50x)", "9.0", "ms"]
    assert lines[-1] == "one etcd round trip (a one-key transaction): 1.25 ms"
    steps = measured.steps_table().splitlines()
    assert steps[2].split() == ["claim", "-", "3.0"]
    assert steps[-1].split() == ["sum", "of", "the", "steps", "2.0", "7.0"]
    fig = cost.plot(measured)
    labels = [text.get_text() for ax in fig.axes for text in ax.texts]
    assert labels == ["0.90x", "0.65x"]


def test_the_steps_of_an_event_are_read_from_svcs_debug_lines():
    # Given svc's DEBUG lines for an event published at 12:00:00.000 (local time), I expect each
    # step to end at its line and the first to start at the publish; an event never acked is left out
    sent = {"e-1": cost._log_time("2026-12-06 12:00:00", "000"), "e-2": 0.0}
    log = "\n".join([
        "2026-12-06 12:00:00,002 DEBUG svc.processor: event 'e-1': parsed new_order",
        "2026-12-06 12:00:00,005 DEBUG svc.processor: event 'e-1': claim: claimed",
        "2026-12-06 12:00:00,005 DEBUG svc.processor: event 'e-1': work (0 ms)",
        "2026-12-06 12:00:00,007 DEBUG svc.processor: event 'e-1': done mark and effect written",
        "2026-12-06 12:00:00,008 DEBUG svc.consumer: event 'e-1': acked",
        "2026-12-06 12:00:00,009 DEBUG svc.processor: event 'e-2': parsed new_order",
    ])
    [(event_id, steps)] = cost.steps_of(log, sent).items()
    assert event_id == "e-1"
    assert {k: round(v) for k, v in steps.items()} == {"delivery": 2, "claim": 3, "work": 0, "done mark + effect": 2, "ack": 1}


def test_a_small_live_measurement_processes_every_event(amqp_url, etcd_endpoint):
    # (1,200 events: three windows of svc's at the default PREFETCH; its rate is timed between them)
    measured = cost.measure(events=1200, rounds=1, latency_samples=3, progress=print)
    # one round: bare, off, bare, on, bare
    assert [len(measured.rates[name]) for name in cost.CONTENDERS] == [3, 1, 1]
    assert all(rate > 0 for rates in measured.rates.values() for rate in rates)
    assert all(len(ratios) == 1 and ratios[0] > 0 for ratios in measured.ratios.values())
    # and its made-up services (t<hex>_cost, t<hex>_latency) gone from statsd and Graphite's tree
    left = [name for kind in prune.KINDS for name in prune.statsd_names(kind) if re.match(r"t[0-9a-f]{6}_(cost|latency)_", name)]
    assert left == []
    assert [path.name for path in whisper_dir().rglob("t*_cost_*")] == []
    assert all(len(found) == 3 and min(found) >= 0 for found in measured.latencies_ms.values())
    # every step of a lone event measured: the claim only with dedup on
    assert set(measured.steps_ms["svc, dedup on"]) == set(cost.STEPS)
    assert set(measured.steps_ms["svc, dedup off"]) == set(cost.STEPS) - {"claim"}
    assert measured.round_trip_ms > 0


def test_the_bare_publisher_yardstick_puts_every_event_in_the_queue_confirmed(svc_world):
    # Given a queue bound to the world's exchange...
    orders = svc_world.service_name("orders")
    # ... when the bare publisher sends 3,000 events with pipelined confirms...
    rate = cost.bare_pika_publish(svc_world, orders, 3000)
    # ... I expect a rate, and every event in the queue, each with its own id.
    assert rate > 0 and svc_world.depth(orders) == 3000
    bodies = [svc_world.channel().basic_get(svc_world.queue(orders), auto_ack=True)[2] for _ in range(10)]
    assert len({json.loads(body)["id"] for body in bodies}) == 10


def test_a_queue_the_broker_did_not_fill_is_an_error_of_the_kit_also_under_python_O():
    # Given a publish the broker did not confirm (found: `assert ... .ok`, gone under python -O,
    # so the measurement went on with an empty queue)
    class Refusing:
        def publisher(self, service):
            return self

        def publish(self, event, **options):
            return type("Result", (), {"ok": False, "__str__": lambda self: "3 of 3 unconfirmed"})()

    # When the queue is filled for a measurement, I expect the kit's error naming what happened
    with pytest.raises(MeasureError, match="filling orders's queue: 3 of 3 unconfirmed"):
        cost.fill(Refusing(), "orders", 3)
