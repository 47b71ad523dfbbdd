"""Chapter 8: what idempotency costs, measured live at a notebook's size, side by side.

The same comparison as ``bench/bench_svc.py`` (which runs it at full size): a bare pika
consume-and-ack loop, ``python -m svc`` with deduplication off, and with claims in etcd, each
draining the same number of events from a fresh queue of an isolated world
(:class:`svc.testing.World`: its own exchange and etcd prefix, removed at the end). Rounds
interleave the contenders, so a busy moment of the machine hits all of them; ratios are taken
against the bare loop of the same round.

Latency is measured per event, one at a time on an idle service: from the publish to the ``at``
time of the event's effect record (both wall-clock seconds on this machine). With dedup a window pays two etcd round trips (the claim, then the done mark with the
effect) where dedup off pays one (the effect); :func:`etcd_round_trip_ms` measures one.
"""

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pika
from matplotlib.figure import Figure

from svc import _etcd
from svc.config import DEFAULT_PREFETCH, parse_endpoints, split_urls
from svc.effects import records
from svc.testing import World, wait_for

from .plots import subplots
from .prune import prune
from ._wait import Progress
from .settings import current

EVENT = {"type": "new_order", "id": "cost", "args": {"sku": "talk-tshirt", "qty": 1}}
CONTENDERS = ("bare pika", "svc, dedup off", "svc, dedup on")
DRAIN_TIMEOUT = 120.0   # seconds for one contender to drain its queue


@dataclass(frozen=True)
class Cost:
    """Events/s per contender and round, latencies (ms) per svc contender, etcd round trip (ms)."""

    events: int
    rates: dict[str, list[float]]
    latencies_ms: dict[str, list[float]]
    round_trip_ms: float

    def rate(self, name: str) -> float:
        """The median events/s of a contender."""
        return statistics.median(self.rates[name])

    def ratio(self, name: str) -> float:
        """The median of each round's rate over that round's bare pika rate."""
        return statistics.median(r / b for r, b in zip(self.rates[name], self.rates[CONTENDERS[0]], strict=True))

    def latency(self, name: str) -> float:
        return statistics.median(self.latencies_ms[name])

    def table(self) -> str:
        lines = [f"{'contender':16} {'events/s':>9} {'ratio':>6} {'latency p50':>12}"]
        for name in CONTENDERS:
            latency = f"{self.latency(name):9.1f} ms" if name in self.latencies_ms else ""
            lines.append(f"{name:16} {self.rate(name):9.0f} {self.ratio(name):5.2f}x {latency:>12}")
        lines.append(f"one etcd round trip (a one-key transaction): {self.round_trip_ms:.2f} ms")
        return "\n".join(lines)


def fill(world: World, service: str, events: int) -> None:
    """Put ``events`` copies of :data:`EVENT` with fresh ids in ``service``'s queue and wait (60 s
    at most) until the broker counts them all; raises AssertionError / TimeoutError otherwise."""
    assert world.publisher(service).publish(EVENT, count=events, fresh_ids=True).ok
    wait_for(lambda: world.depth(service) == events, f"{events} events in {service}'s queue", timeout=60)


def bare_pika(world: World, service: str, events: int, prefetch: int = DEFAULT_PREFETCH) -> float:
    """Events/s of the simplest correct consumer draining ``events`` queued events: pika's
    BlockingConnection, manual ack per event, the same prefetch as svc. The yardstick of chapter 8
    and of bench/bench_svc.py (timed from the first ack to the last, so the start is not counted)."""
    fill(world, service, events)
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    acked: list[float] = []

    def on_message(ch, method, properties, body) -> None:
        ch.basic_ack(method.delivery_tag)
        acked.append(time.time())
        if len(acked) == events:
            ch.stop_consuming()

    channel.basic_consume(world.queue(service), on_message)
    channel.start_consuming()
    connection.close()
    return (events - 1) / (acked[-1] - acked[0])


def bare_pika_publish(world: World, service: str, events: int) -> float:
    """Events/s of the simplest correct confirmed publisher, the yardstick of ``svc.Publisher``:
    pika's SelectConnection, publisher confirms pipelined (every event sent, then the broker's
    acks, often ``multiple``, counted), persistent and mandatory like svc's; each event its own id.
    Timed from opening the connection to the last confirm, as svc's ``publish()`` is. The events
    land in ``service``'s queue (declared by ``world.service_name``). Raises AssertionError unless
    the broker confirmed every event, routed."""
    unconfirmed, floor, returned = set(range(1, events + 1)), [1], []
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)

    def on_open(connection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel) -> None:
        channel.add_on_return_callback(lambda *returned_message: returned.append(returned_message))
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _: send(channel))

    def send(channel) -> None:
        for i in range(events):
            body = json.dumps(dict(EVENT, id=f"bare-{i}")).encode()
            channel.basic_publish(world.exchange, "foo", body, properties, mandatory=True)

    def on_confirm(frame) -> None:
        method = frame.method
        assert isinstance(method, pika.spec.Basic.Ack), f"the broker nacked {method}"
        if method.multiple:  # every tag up to this one: each tag is looked at once in all
            unconfirmed.difference_update(range(floor[0], method.delivery_tag + 1))
            floor[0] = method.delivery_tag + 1
        else:
            unconfirmed.discard(method.delivery_tag)
        if not unconfirmed:
            connection.close()

    started = time.perf_counter()
    connection = pika.SelectConnection(pika.URLParameters(world.amqp_url), on_open_callback=on_open,
                                       on_close_callback=lambda *_: connection.ioloop.stop())
    connection.ioloop.call_later(DRAIN_TIMEOUT, connection.close)
    connection.ioloop.start()
    elapsed = time.perf_counter() - started
    assert not unconfirmed and not returned, f"{len(unconfirmed)} unconfirmed, {len(returned)} returned"
    return events / elapsed


def _svc(world: World, service: str, events: int, dedup: bool) -> float:
    """Events/s of python -m svc draining a full queue, from its effect records' times."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=dedup, log_level="WARNING")
    wait_for(lambda: world.depth(service) == 0 and world.effects(service) >= events, "the queue drained",
             timeout=DRAIN_TIMEOUT, interval=0.2)
    process.stop()
    times = sorted(record["at"] for record in records(world.etcd, service, prefix=world.prefix))
    return (events - 1) / (times[-1] - times[0])


def _latencies(world: World, service: str, dedup: bool, samples: int) -> list[float]:
    """Milliseconds from each publish to its effect, one event at a time on an idle service."""
    world.start(service, enable_etcd=dedup, log_level="WARNING")
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    channel = connection.channel()
    found = []
    try:
        for i in range(samples):
            event_id = f"lat-{i}"
            sent = time.time()
            channel.basic_publish(world.exchange, "foo", json.dumps(dict(EVENT, id=event_id)).encode())
            wait_for(lambda event_id=event_id: world.effects(service, event_id), f"event {event_id} processed", timeout=10,
                     interval=0.002)
            [effect] = [r for r in records(world.etcd, service, prefix=world.prefix) if r["id"] == event_id]
            found.append((effect["at"] - sent) * 1000)
    finally:
        connection.close()
    return found


def etcd_round_trip_ms(endpoint: str | None = None, samples: int = 50) -> float:
    """The median milliseconds of one transaction reading one key, as a claim does; on ``endpoint``
    (``host:port[,...]``, default the kit's ETCD_ENDPOINTS). Raises svc's DedupUnavailable when
    etcd does not answer."""
    etcd = _etcd.Etcd(parse_endpoints(endpoint or current().etcd_endpoint))
    try:
        timings = []
        for _ in range(samples):
            request = _etcd.new_txn()
            _etcd.add_get(request.success, b"/nirvana/cost-probe")
            started = time.perf_counter()
            etcd.txn(request)
            timings.append((time.perf_counter() - started) * 1000)
        return statistics.median(timings)
    finally:
        etcd.close()


def measure(events: int = 2000, rounds: int = 2, latency_samples: int = 20, *, progress: Progress = print) -> Cost:
    """Run the comparison on the kit's broker, etcd and statsd (:mod:`nirvana.settings`; a cluster's
    first node, its queues declared as QUEUE_TYPE says); the Cost. Everything it made is removed,
    also on error: its queues and keys, and its made-up services' metrics from statsd and Graphite's
    tree (:func:`nirvana.prune.prune`)."""
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    latencies: dict[str, list[float]] = {}
    kit = current()
    with tempfile.TemporaryDirectory() as logs:
        # the bare pika contenders take one URL: a cluster's first node (svc would fail over; they do not)
        world = World(split_urls(kit.amqp_url)[0], kit.etcd_endpoint, Path(logs),
                      statsd=(kit.statsd_host, kit.statsd_port), queue_type=kit.queue_type,
                      delivery_limit=kit.delivery_limit)
        try:
            for n in range(rounds):
                for name, run in zip(CONTENDERS, (lambda s: bare_pika(world, s, events),
                                                  lambda s: _svc(world, s, events, False),
                                                  lambda s: _svc(world, s, events, True)), strict=True):
                    service = world.service_name("cost")
                    rates[name].append(run(service))
                    world.channel().queue_delete(world.queue(service))   # bound with #: it would slow the next fills
                    progress(f"round {n + 1}: {name}: {rates[name][-1]:.0f} events/s")
            for name, dedup in zip(CONTENDERS[1:], (False, True), strict=True):
                latencies[name] = _latencies(world, world.service_name("latency"), dedup, latency_samples)
                progress(f"{name}: latency p50 {statistics.median(latencies[name]):.1f} ms")
        finally:
            world.close()
            try:
                prune(world.services)
            except OSError:   # statsd not answering: it sends nothing for them either
                pass
    return Cost(events, rates, latencies, etcd_round_trip_ms())


def plot(cost: Cost) -> Figure:
    """Two panels: events/s per contender with its ratio to bare pika; latency p50 per svc contender."""
    fig, (left, right) = subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    # names and labels on two lines: three bars share two thirds of a slide at the kit's text size
    bars = left.bar([n.replace(", ", "\n") for n in CONTENDERS], [cost.rate(name) for name in CONTENDERS],
                    color=["#9e9e9e", "#1976d2", "#2e7d32"])
    left.bar_label(bars, labels=[f"{cost.rate(n):.0f}/s\n{cost.ratio(n):.2f}x" for n in CONTENDERS])
    left.margins(y=0.3)
    left.set_ylabel("events/s")
    left.set_title(f"draining {cost.events} events")
    names = [n for n in CONTENDERS if n in cost.latencies_ms]
    bars = right.bar([n.replace(", ", "\n") for n in names], [cost.latency(n) for n in names],
                     color=["#1976d2", "#2e7d32"])
    right.bar_label(bars, fmt="%.1f ms")
    right.margins(y=0.15)
    right.set_ylabel("ms, publish to effect (p50)")
    right.set_title("one event at a time")
    fig.tight_layout()
    return fig


__all__ = ["Cost", "CONTENDERS", "measure", "etcd_round_trip_ms", "plot", "bare_pika", "bare_pika_publish"]
