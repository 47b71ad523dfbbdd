"""nirvana.cost: ratios per round, the table and the chart (pure); one small live measurement."""

import json
import re

import matplotlib

matplotlib.use("Agg")

from nirvana import cost, prune  # noqa: E402
from nirvana.stack.carbon import whisper_dir  # noqa: E402

RATES = {"bare pika": [1000.0, 2000.0], "svc, dedup off": [1500.0, 2000.0], "svc, dedup on": [500.0, 1200.0]}
LATENCIES = {"svc, dedup off": [1.0, 2.0, 3.0], "svc, dedup on": [8.0, 9.0, 10.0]}


def test_ratios_are_taken_round_by_round_against_the_bare_loop():
    measured = cost.Cost(2000, RATES, LATENCIES, 1.25)
    assert measured.rate("bare pika") == 1500.0
    assert measured.ratio("svc, dedup off") == 1.25      # median of 1.5x and 1.0x
    assert measured.ratio("svc, dedup on") == 0.55       # median of 0.5x and 0.6x
    assert measured.latency("svc, dedup on") == 9.0


def test_table_and_chart_show_each_contender_with_its_ratio():
    measured = cost.Cost(2000, RATES, LATENCIES, 1.25)
    lines = measured.table().splitlines()
    assert lines[1].split() == ["bare", "pika", "1500", "1.00x"]
    assert lines[3].split() == ["svc,", "dedup", "on", "850", "0.55x", "9.0", "ms"]
    assert lines[-1] == "one etcd round trip (a one-key transaction): 1.25 ms"
    fig = cost.plot(measured)
    labels = [text.get_text() for ax in fig.axes for text in ax.texts]
    assert labels == ["1500/s\n1.00x", "1750/s\n1.25x", "850/s\n0.55x", "2.0 ms", "9.0 ms"]


def test_a_small_live_measurement_processes_every_event(amqp_url, etcd_endpoint):
    measured = cost.measure(events=200, rounds=1, latency_samples=3, progress=print)
    assert all(len(rates) == 1 and rates[0] > 0 for rates in measured.rates.values())
    # and its made-up services (t<hex>_cost, t<hex>_latency) gone from statsd and Graphite's tree
    left = [name for kind in prune.KINDS for name in prune.statsd_names(kind) if re.match(r"t[0-9a-f]{6}_(cost|latency)_", name)]
    assert left == []
    assert [path.name for path in whisper_dir().rglob("t*_cost_*")] == []
    assert all(len(found) == 3 and min(found) >= 0 for found in measured.latencies_ms.values())
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
