"""Chapter 8: what idempotency costs, measured live at a notebook's size, side by side.

The same comparison as ``bench/bench_svc.py`` (which runs it at full size): a bare pika
consume-and-ack loop, ``python -m svc`` with deduplication off, and with claims in etcd, each
draining the same number of events from a fresh queue of an isolated world
(:class:`nirvana.testing.World`: its own exchange and etcd prefix, removed at the end).

A shared machine's speed changes from second to second, so, as in the bench, each svc run is
bracketed by the bare loop in the same round: bare, svc, bare, svc, bare (the two svc contenders
alternating in order from round to round), and its ratio is its rate over the mean of the two bare
runs around it. A round where the machine was busy for one contender shows as a low ratio of that
round, not as one contender "faster than the floor". How sure a figure is: the median and the lowest
of the rounds, side by side.

Latency is measured per event, one at a time on an idle service, from the publish to the event's
ack, and split into the steps svc logs for each event id at ``LOG_LEVEL=DEBUG`` (milliseconds
on the log's clock): the delivery (publish to parsed; a lone event does not wait for a window to
fill), the claim (one etcd transaction), the work, the done mark with the effect (one more
transaction; dedup off writes the effect alone), the ack. :func:`etcd_round_trip_ms` measures one
bare transaction, to set each step against.
"""

import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pika
from matplotlib.figure import Figure

from svc import amqp, etcd as _etcd
from svc.config import DEFAULT_PREFETCH, parse_endpoints, split_urls
from svc.effects import records
from .testing import World, wait_for

from .errors import MeasureError
from .plots import subplots
from .prune import prune
from ._wait import Progress
from .settings import current

EVENT = {"type": "new_order", "id": "cost", "args": {"sku": "talk-tshirt", "qty": 1}}
CONTENDERS = ("bare pika", "svc, dedup off", "svc, dedup on")
DRAIN_TIMEOUT = 120.0   # seconds for one contender to drain its queue
CONNECT_TIMEOUT = 10.0  # seconds for each wait of the bare contenders' connections (TCP, handshake, blocked)


STEPS = ("delivery", "claim", "work", "done mark + effect", "ack")
# what svc logs for an event id at LOG_LEVEL=DEBUG, and the step each line ends (svc/processor.py, svc/consumer.py)
_STEP_LINES = (("parsed", "delivery"), ("claim: claimed", "claim"), ("work (", "work"),
               ("written", "done mark + effect"), ("acked", "ack"))
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) DEBUG \S+: event '([^']*)': (.*)$")


@dataclass(frozen=True)
class Cost:
    """What :func:`measure` found.

    ``rates``: events/s per contender, one per run (the bare loop runs ``2 * rounds + 1`` times,
    each svc contender ``rounds`` times); ``ratios``: per svc contender and round, its rate over
    the mean of the bare runs just before and after it; ``latencies_ms``: publish to ack per event,
    per svc contender; ``steps_ms``: per svc contender, the median milliseconds of each of
    :data:`STEPS` (absent: the step is not taken); ``round_trip_ms``: one etcd transaction (median).
    """

    events: int
    rates: dict[str, list[float]]
    ratios: dict[str, list[float]]
    latencies_ms: dict[str, list[float]]
    steps_ms: dict[str, dict[str, float]]
    round_trip_ms: float

    @property
    def rounds(self) -> int:
        return len(self.ratios[CONTENDERS[1]])

    def rate(self, name: str) -> float:
        """The median events/s of a contender."""
        return statistics.median(self.rates[name])

    def ratio(self, name: str) -> float:
        """The median over rounds of the contender's bracketed ratio (1.0 for the bare loop)."""
        return statistics.median(self.ratios[name]) if name in self.ratios else 1.0

    def lowest_ratio(self, name: str) -> float:
        """The lowest bracketed ratio of the rounds: how far one busy round pulled it down."""
        return min(self.ratios[name]) if name in self.ratios else 1.0

    def latency(self, name: str) -> float:
        """The median milliseconds from publish to ack of a svc contender."""
        return statistics.median(self.latencies_ms[name])

    def table(self) -> str:
        lines = [f"{'contender':16} {'events/s median (lowest)':>25} {'vs the bare loop around it':>27} "
                 f"{'latency p50':>12}"]
        for name in CONTENDERS:
            rate = f"{self.rate(name):,.0f} ({min(self.rates[name]):,.0f})"
            ratio = (f"{self.ratio(name):.2f}x ({self.lowest_ratio(name):.2f}x)" if name in self.ratios
                     else "the yardstick")
            latency = f"{self.latency(name):.1f} ms" if name in self.latencies_ms else ""
            lines.append(f"{name:16} {rate:>25} {ratio:>27} {latency:>12}")
        lines.append(f"{self.events:,} events a run, {self.rounds} rounds: bare, svc, bare, svc, bare; "
                     "ratio = median of the rounds (lowest)")
        lines.append(f"one etcd round trip (a one-key transaction): {self.round_trip_ms:.2f} ms")
        return "\n".join(lines)

    def steps_table(self) -> str:
        """Where a lone event's time goes, per step and svc contender (median ms of the events, on
        the log's millisecond clock; their sum is near, not equal to, the median publish to ack)."""
        names = [n for n in CONTENDERS if n in self.steps_ms]
        lines = [f"{'step (median ms)':20}" + "".join(f"{n:>16}" for n in names)]
        for step in STEPS:
            lines.append(f"{step:20}" + "".join(f"{self.steps_ms[n][step]:>16.1f}" if step in self.steps_ms[n]
                                                else f"{'-':>16}" for n in names))
        lines.append(f"{'sum of the steps':20}" + "".join(f"{sum(self.steps_ms[n].values()):>16.1f}" for n in names))
        return "\n".join(lines)


def fill(world: World, service: str, events: int) -> None:
    """Put ``events`` copies of :data:`EVENT` with fresh ids in ``service``'s queue and wait (60 s
    at most) until the broker counts them all; raises MeasureError / TimeoutError otherwise."""
    result = world.publisher(service).publish(EVENT, count=events, fresh_ids=True)
    if not result.ok:
        raise MeasureError(f"filling {service}'s queue: {result}")
    wait_for(lambda: world.depth(service) == events, f"{events} events in {service}'s queue", timeout=60)


def bare_pika(world: World, service: str, events: int, prefetch: int = DEFAULT_PREFETCH, *,
              filled: bool = False) -> float:
    """Events/s of the simplest correct consumer draining ``events`` queued events: pika's
    BlockingConnection, manual ack per event, the same prefetch as svc. The yardstick of chapter 8
    and of bench/bench_svc.py (timed from the first ack to the last, so the start is not counted).
    ``filled``: the queue holds the events already (:func:`fill`), else they are put there first."""
    if not filled:
        fill(world, service, events)
    connection = pika.BlockingConnection(amqp.parameters(world.amqp_url, CONNECT_TIMEOUT))
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
    land in ``service``'s queue (declared by ``world.service_name``). Raises MeasureError unless
    the broker confirmed every event, routed."""
    unconfirmed, floor, returned, nacked = set(range(1, events + 1)), [1], [], []
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
        if not isinstance(method, pika.spec.Basic.Ack):
            nacked.append(method.delivery_tag)   # said after the run (an error here would stop pika's loop)
        if method.multiple:  # every tag up to this one: each tag is looked at once in all
            unconfirmed.difference_update(range(floor[0], method.delivery_tag + 1))
            floor[0] = method.delivery_tag + 1
        else:
            unconfirmed.discard(method.delivery_tag)
        if not unconfirmed:
            connection.close()

    started = time.perf_counter()
    connection = pika.SelectConnection(amqp.parameters(world.amqp_url, CONNECT_TIMEOUT), on_open_callback=on_open,
                                       on_close_callback=lambda *_: connection.ioloop.stop())
    connection.ioloop.call_later(DRAIN_TIMEOUT, connection.close)
    connection.ioloop.start()
    elapsed = time.perf_counter() - started
    if unconfirmed or returned or nacked:
        raise MeasureError(f"the bare publisher's {events} events: {len(unconfirmed)} unconfirmed, "
                           f"{len(nacked)} nacked, {len(returned)} returned")
    return events / elapsed


def _svc(world: World, service: str, events: int, dedup: bool) -> float:
    """Events/s of python -m svc draining a full queue, from its effect records' times (the first
    to the last: the service's start is not timed, nor its first window's work, which flatters it
    by up to a window, 500 events at the default PREFETCH, in ``events``: a reason for thousands).
    Raises MeasureError when every event was committed in one window (an effect's time is its
    window's commit time: svc/effects.py)."""
    fill(world, service, events)
    [process] = world.start(service, enable_etcd=dedup, log_level="WARNING")
    wait_for(lambda: world.depth(service) == 0 and world.effects(service) >= events, "the queue drained",
             timeout=DRAIN_TIMEOUT, interval=0.2)
    process.stop()
    times = sorted(record["at"] for record in records(world.etcd, service, prefix=world.prefix))
    if times[-1] <= times[0]:   # an effect's time is its window's commit: one window, no span to time
        raise MeasureError(f"svc committed all {events} events in one window: measure more events than a window "
                           "holds (a third of PREFETCH, 500 by default), e.g. events=6000 as chapter 08 does")
    return (events - 1) / (times[-1] - times[0])


def _log_time(stamp: str, millis: str) -> float:
    """Wall-clock seconds of a log line's ``asctime`` (local time, milliseconds)."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def steps_of(log: str, sent: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per event id of ``sent`` ({id: publish time, wall-clock s}): milliseconds of each step of
    :data:`STEPS` it went through, from svc's DEBUG lines in ``log`` (each step ends at its line;
    the first, the delivery, starts at the publish). An id without an ``acked`` line is left out."""
    seen: dict[str, list[tuple[float, str]]] = {}
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match and match[3] in sent:
            step = next((name for text, name in _STEP_LINES if match[4].startswith(text) or
                         (text == "written" and text in match[4])), None)
            if step:
                seen.setdefault(match[3], []).append((_log_time(match[1], match[2]), step))
    found = {}
    for event_id, marks in seen.items():
        if marks[-1][1] != "ack":
            continue
        steps, last = {}, sent[event_id]
        for at, step in marks:
            steps[step] = max(0.0, (at - last) * 1000)
            last = at
        found[event_id] = steps
    return found


def _latencies(world: World, service: str, dedup: bool, samples: int) -> tuple[list[float], dict[str, float]]:
    """Milliseconds from each publish to its ack, one event at a time on an idle service, and the
    median milliseconds of each step (:func:`steps_of`). Raises TimeoutError if an event is not acked
    within 10 s."""
    [process] = world.start(service, enable_etcd=dedup, log_level="DEBUG")
    connection = amqp.connect(world.amqp_url, CONNECT_TIMEOUT, name="nirvana cost")
    channel = connection.channel()
    sent: dict[str, float] = {}
    try:
        for i in range(samples):
            event_id = f"lat-{i}"
            sent[event_id] = time.time()
            channel.basic_publish(world.exchange, "foo", json.dumps(dict(EVENT, id=event_id)).encode())
            wait_for(lambda event_id=event_id: f"event {event_id!r}: acked" in process.log(),
                     f"event {event_id} acked", timeout=10, interval=0.002)
    finally:
        connection.close()
    steps = steps_of(process.log(), sent)
    totals = [sum(one.values()) for one in steps.values()]
    medians = {step: statistics.median(one[step] for one in steps.values()) for step in STEPS
               if all(step in one for one in steps.values())}
    return totals, medians


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


def measure(events: int = 6000, rounds: int = 3, latency_samples: int = 20, *, progress: Progress = print) -> Cost:
    """Run the comparison on the kit's broker, etcd and statsd (:mod:`nirvana.settings`; a cluster's
    first node, its queues declared as QUEUE_TYPE says); the Cost. Each round: bare, svc, bare, svc,
    bare (the svc contenders' order alternating by round), ``events`` events a run, each on a
    fresh queue; then ``latency_samples`` lone events per svc contender. Everything it made is
    removed, also on error, its made-up services' metrics
    from statsd and Graphite's tree too (:func:`nirvana.prune.prune`)."""
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    ratios: dict[str, list[float]] = {name: [] for name in CONTENDERS[1:]}
    latencies: dict[str, list[float]] = {}
    steps: dict[str, dict[str, float]] = {}
    kit = current()
    with tempfile.TemporaryDirectory() as logs:
        # the bare pika contenders take one URL: a cluster's first node (svc would fail over; they do not)
        world = World(split_urls(kit.amqp_url)[0], kit.etcd_endpoint, Path(logs),
                      statsd=(kit.statsd_host, kit.statsd_port), queue_type=kit.queue_type,
                      delivery_limit=kit.delivery_limit)
        runs = {CONTENDERS[0]: lambda s: bare_pika(world, s, events),
                CONTENDERS[1]: lambda s: _svc(world, s, events, False),
                CONTENDERS[2]: lambda s: _svc(world, s, events, True)}

        def run(name: str) -> float:
            service = world.service_name("cost")
            rates[name].append(runs[name](service))
            world.channel().queue_delete(world.queue(service))   # bound with #: it would slow the next fills
            return rates[name][-1]

        try:
            for n in range(rounds):
                before = run(CONTENDERS[0])
                for name in CONTENDERS[1:] if n % 2 == 0 else CONTENDERS[:0:-1]:
                    rate = run(name)
                    after = run(CONTENDERS[0])
                    ratios[name].append(rate / ((before + after) / 2))
                    progress(f"round {n + 1}: {name}: {rate:,.0f} events/s between bare runs of "
                             f"{before:,.0f} and {after:,.0f}: {ratios[name][-1]:.2f}x")
                    before = after
            for name, dedup in zip(CONTENDERS[1:], (False, True), strict=True):
                latencies[name], steps[name] = _latencies(world, world.service_name("latency"), dedup, latency_samples)
                progress(f"{name}: latency p50 {statistics.median(latencies[name]):.1f} ms")
        finally:
            world.close()
            try:
                prune(world.services)
            except OSError:   # statsd not answering: it sends nothing for them either
                pass
    return Cost(events, rates, ratios, latencies, steps, etcd_round_trip_ms())


def plot(cost: Cost) -> Figure:
    """Two panels: each svc contender's ratio to the bare loop around it (median bar, lowest as a
    tick); a lone event's publish-to-ack time per svc contender, stacked by step."""
    fig, (left, right) = subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    names = list(CONTENDERS[1:])
    bars = left.bar(names, [cost.ratio(n) for n in names], color=["#1976d2", "#2e7d32"])
    left.scatter(names, [cost.lowest_ratio(n) for n in names], marker="_", s=600, color="#000", zorder=3,
                 label="lowest round")
    left.bar_label(bars, labels=[f"{cost.ratio(n):.2f}x" for n in names])
    left.axhline(1.0, color="#9e9e9e", linestyle="--", linewidth=1)
    left.set_ylabel("x the bare pika loop")
    left.set_title(f"throughput, {cost.rounds} rounds (median)")
    left.legend(loc="upper right")
    bottoms = [0.0] * len(names)
    for step, color in zip(STEPS, ("#bdbdbd", "#ef6c00", "#8d6e63", "#2e7d32", "#1976d2"), strict=True):
        heights = [cost.steps_ms[n].get(step, 0.0) for n in names]
        right.bar(names, heights, bottom=bottoms, color=color, label=step)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    right.set_ylabel("ms, publish to ack (median a step)")
    right.set_title("one event at a time, by step")
    right.legend(loc="upper left")
    fig.tight_layout()
    return fig


__all__ = ["Cost", "CONTENDERS", "STEPS", "measure", "steps_of", "etcd_round_trip_ms", "plot", "bare_pika", "bare_pika_publish"]
