"""svc reading the log (SOURCE=log) against the real RabbitMQ and etcd: the tracking record written
with the effects makes a reader killed at any step resume exactly where its effects end.

Every expected view is computed here from the log's own content, read with a bare pika consumer.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pika
import pytest

from svc import projection, topology
from svc.event import parse
from svc.errors import InvalidEvent
from svc.replay import IN_FLIGHT, LOG_OFFSET_HEADER, TXN_OPS
from svc.stream import OFFSET_HEADER, log_end
from svc.config import VARIABLES
from nirvana.testing import ServiceProcess, wait_for

# A window holds at most TXN_OPS events (one or two etcd operations each): a crash after the first
# window's commit, with IN_FLIGHT commits sent, still leaves windows unread
EVENTS = (IN_FLIGHT + 2) * TXN_OPS
RUN_TIMEOUT = 30.0


def orders(count: int, start: int = 0) -> list[bytes]:
    """``count`` new_order bodies over 5 skus and 7 customers."""
    return [json.dumps({"type": "new_order", "id": f"o-{i}",
                        "args": {"sku": f"sku-{i % 5}", "customer": f"c-{i % 7}", "qty": 1 + i % 3}}).encode()
            for i in range(start, start + count)]


def with_faults(bodies: list[bytes]) -> list[bytes]:
    """``bodies`` with a copy of an event (a publisher's retry), a body that is no event, and an id
    seen with another payload: what a log holds besides clean events."""
    conflict = json.dumps({"type": "new_order", "id": "o-3", "args": {"sku": "other"}}).encode()
    return bodies[:10] + [bodies[4], b"not json"] + bodies[10:20] + [conflict] + bodies[20:]


def publish(world, bodies: list[bytes]) -> None:
    """Publish to the world's exchange with its log declared (and no service queue)."""
    topology.declare_log(topology.declare(world.channel(), world.exchange, services=()), world.exchange)
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()   # each publish confirmed (and routed: mandatory) before the next
        for body in bodies:
            channel.basic_publish(world.exchange, "foo", body, mandatory=True)
    finally:
        connection.close()


def read_log(world) -> list[tuple[int, bytes]]:
    """The log's whole content, ``[(offset, body)]``, read by a bare pika consumer from ``first``."""
    end = log_end(world.amqp_url, world.exchange)
    got: list[tuple[int, bytes]] = []
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=500)

        def on_message(channel, method, properties, body):
            got.append((int(properties.headers[OFFSET_HEADER]), body))
            channel.basic_ack(method.delivery_tag)

        channel.basic_consume(topology.log_name(world.exchange), on_message, arguments={OFFSET_HEADER: "first"})
        deadline = time.monotonic() + 10
        while (not got or got[-1][0] < end) and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # pika rejects what it buffered, which a stream refuses by closing the connection
    return got


def expected_view(log: list[tuple[int, bytes]], dedup: bool = True) -> dict:
    """The view of the log's events (each id once with dedup, its first copy; every copy without)."""
    events = []
    for _offset, body in log:
        try:
            events.append(parse(body))
        except InvalidEvent:
            pass
    if dedup:
        return projection.build(events)
    view: dict = {}
    for event in events:
        projection.apply(view, event)
    return view


class Reader(ServiceProcess):
    """``python -m svc`` with SOURCE=log; ``tracking`` the way the tracking record is written
    (svc.replay.TRACKING, set in the child before it starts: "txn" is the design)."""

    def __init__(self, world, service: str, tracking: str = "txn", prelude: str = "", **settings) -> None:
        """``prelude``: Python run in the child before svc starts."""
        env = world.env(service, **{"source": "log", "log_offset": "first", **settings})
        code = (f"import sys, svc.replay, svc.service; svc.replay.TRACKING = {tracking!r}\n{prelude}\n"
                "sys.exit(svc.service.main())")
        super().__init__(service, env, world.log_dir / f"{service}-{len(world.processes)}.log",
                         [sys.executable, "-c", code])
        world.processes.append(self)


def state(world, service: str, version: int = 1):
    return (projection.read_tracking(world.etcd, world.prefix, service, version),
            projection.read_view(world.etcd, world.prefix, service, version))


def applied_twice(world, service: str, version: int = 1) -> int:
    """Events whose effect records are more than one."""
    return projection.applied_twice(world.etcd, world.prefix, service, version)


def run_until(world, reader: Reader, service: str, end: int, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until ``service``'s tracking record reaches ``end``; the reader's log on a timeout."""
    try:
        wait_for(lambda: projection.read_tracking(world.etcd, world.prefix, service, 1) == end,
                 f"{service}'s tracking record at offset {end}", timeout)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{reader.log()}") from None


def test_a_late_service_catches_up_from_the_first_event_of_the_log(svc_world):
    # Given events published before billing ever ran (no queue of its own: chapter 1's trap),
    # among them a copy, a body that is no event and a conflicting payload
    publish(svc_world, with_faults(orders(EVENTS)))
    log = read_log(svc_world)
    # When billing starts, reading the log from its first event
    service = svc_world.service_name("billing")
    reader = Reader(svc_world, service, enable_etcd=True)
    run_until(svc_world, reader, service, log[-1][0])
    reader.stop()
    # I expect every event applied once: the view equal to the log's, no effect twice ...
    position, view = state(svc_world, service)
    assert projection.digest(view) == projection.digest(expected_view(log))
    assert applied_twice(svc_world, service) == 0
    # ... and what could not be applied dead-lettered with its reason and its offset in the log
    letters = {headers[LOG_OFFSET_HEADER]: topology.dead_letter_reason(headers) for _, headers in svc_world.dead_letters()}
    assert sorted(letters) == [11, 22]
    assert letters[11].startswith("body is not JSON") and letters[22].startswith("conflict: id 'o-3'")
    assert "offset 11 of the log dead-lettered" in reader.log()


def test_a_window_commits_one_done_record_and_done_marks_of_old_still_count(svc_world):
    # Given a log of four windows, and a version holding done marks of one key per id (as svc
    # wrote them before done records) for its first ten events
    publish(svc_world, orders(EVENTS))
    log = read_log(svc_world)
    service = svc_world.service_name("billing")
    base = projection.version_prefix(svc_world.prefix, service, 1)
    for _offset, body in log[:10]:
        svc_world.etcd.put(f"{base}done/{parse(body).id}".encode(), b"=" + body)
    # When billing reads the log
    reader = Reader(svc_world, service, enable_etcd=True)
    run_until(svc_world, reader, service, log[-1][0])
    reader.stop()
    # I expect those ten skipped (the view of the rest), the rest in one done record per window, not
    # a key per id, and nothing applied twice
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(log[10:]))
    assert svc_world.etcd.count_prefix(f"{base}done/") == 10
    assert 1 <= svc_world.etcd.count_prefix(f"{base}{projection.WINDOWS}") <= EVENTS // 500
    assert len(projection.read_done(svc_world.etcd, svc_world.prefix, service, 1)) == EVENTS
    assert applied_twice(svc_world, service) == 0


@pytest.mark.parametrize("dedup", [True, False], ids=["dedup", "no-dedup"])
@pytest.mark.parametrize("point", ["read", "done", "acked"])
def test_a_reader_killed_at_any_step_resumes_where_its_effects_end(svc_world, point, dedup):
    # Given a log of three windows of events
    publish(svc_world, orders(EVENTS))
    log = read_log(svc_world)
    service = svc_world.service_name("projector")
    # When the reader SIGKILLs itself at the point, in its first window ...
    killed = Reader(svc_world, service, enable_etcd=dedup, crash_at=point)
    assert killed.popen.wait(RUN_TIMEOUT) == -signal.SIGKILL
    position = projection.read_tracking(svc_world.etcd, svc_world.prefix, service, 1)
    # ... and starts again
    resumed = Reader(svc_world, service, enable_etcd=dedup)
    run_until(svc_world, resumed, service, log[-1][0])
    resumed.stop()
    # I expect the view of the whole log, each event applied once (even without dedup by id:
    # the tracking record alone says what was applied) ...
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(log))
    assert applied_twice(svc_world, service) == 0
    # ... having resumed after the first window's end (killed after its commit), or from the first event
    assert (position is None) if point == "read" else (0 <= position < log[-1][0])
    assert f"reading the log {svc_world.exchange}.log into version 1 from {position + 1 if position is not None else 'first'}" \
        in resumed.log()


# In the child: every other commit reaches etcd 0.2 s late, after the next one (as two calls in
# flight on one connection may, etcd serving each in a goroutine of its own).
LATE_COMMITS = """
import threading, time, concurrent.futures, svc.etcd
_send, _sent = svc.etcd.Etcd.txn_async, [0]
def _late(self, request):
    _sent[0] += 1
    if _sent[0] % 2 == 0:
        return _send(self, request)
    future = concurrent.futures.Future()
    def send():
        time.sleep(0.2)
        try:
            future.set_result(_send(self, request).result())
        except Exception as error:
            future.set_exception(error)
    threading.Thread(target=send, daemon=True).start()
    return future
svc.etcd.Etcd.txn_async = _late
"""


def test_a_commit_that_overtakes_its_predecessor_is_sent_again_not_restarted(svc_world):
    # Given a log of four windows
    publish(svc_world, orders(EVENTS))
    log = read_log(svc_world)
    service = svc_world.service_name("projector")
    # When each odd commit reaches etcd after the commit that follows it (which fails its guard)
    reader = Reader(svc_world, service, prelude=LATE_COMMITS, enable_etcd=True)
    run_until(svc_world, reader, service, log[-1][0])
    reader.stop()
    # I expect the overtaking commits sent again once their predecessor is answered: no restart
    # (reading again from the tracking record), each event applied once, the view of the log
    assert "moved under this reader" not in reader.log() and reader.log().count("reading the log") == 1
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(log))
    assert applied_twice(svc_world, service) == 0


@pytest.mark.parametrize("point, tracking, dedup, outcome", [
    ("read", "before", True, "events skipped"),      # the position ran ahead of the effects
    ("done", "after", False, "events applied twice"),  # the effects ran ahead of the position
    ("acked", "after", False, "events applied twice"),
])
def test_a_position_written_apart_from_the_effects_breaks_the_view(svc_world, point, tracking, dedup, outcome):
    # Given the same log, and a reader that writes its tracking record in a put of its own
    publish(svc_world, orders(EVENTS))
    log = read_log(svc_world)
    service = svc_world.service_name("projector")
    # When it is killed at the point and starts again
    killed = Reader(svc_world, service, tracking, enable_etcd=dedup, crash_at=point)
    assert killed.popen.wait(RUN_TIMEOUT) == -signal.SIGKILL
    resumed = Reader(svc_world, service, tracking, enable_etcd=dedup)
    run_until(svc_world, resumed, service, log[-1][0])
    resumed.stop()
    # I expect the view wrong: the test above fails on such a reader
    view = state(svc_world, service)[1]
    assert projection.digest(view) != projection.digest(expected_view(log))
    if outcome == "events skipped":
        assert sum(v["orders"] for k, v in view.items() if k.startswith("sku/")) < EVENTS
        assert applied_twice(svc_world, service) == 0
    else:
        assert applied_twice(svc_world, service) > 0


def test_dedup_by_id_hides_a_position_written_after_the_effects(svc_world):
    # Given a reader that writes its position after the effects, apart, with dedup by id on
    publish(svc_world, orders(EVENTS))
    log = read_log(svc_world)
    service = svc_world.service_name("projector")
    # When it is killed between the effects and its position, and starts again
    killed = Reader(svc_world, service, "after", enable_etcd=True, crash_at="done")
    assert killed.popen.wait(RUN_TIMEOUT) == -signal.SIGKILL
    resumed = Reader(svc_world, service, "after", enable_etcd=True)
    run_until(svc_world, resumed, service, log[-1][0])
    resumed.stop()
    # I expect the view right (the done marks skip the window read again) but the window counted
    # as skipped: the done marks, kept with the effects, did the tracking record's work
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(log))
    assert applied_twice(svc_world, service) == 0


def test_a_reader_starts_at_a_time_and_at_next(svc_world):
    # Given two batches of events published a few seconds apart
    publish(svc_world, orders(30))
    time.sleep(1.5)
    between = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.5)
    publish(svc_world, orders(20, start=30))
    log = read_log(svc_world)
    # When one reader starts at the time between them
    service = svc_world.service_name("since")
    reader = Reader(svc_world, service, enable_etcd=True, log_offset=between.isoformat())
    run_until(svc_world, reader, service, log[-1][0])
    reader.stop()
    # I expect the view of the second batch only
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(log[30:]))
    # When another starts at "next", then one more event is published
    service = svc_world.service_name("next")
    reader = Reader(svc_world, service, enable_etcd=True, log_offset="next")
    wait_for(lambda: "reading the log" in reader.log(), "the reader consuming", 15)
    time.sleep(0.5)
    publish(svc_world, orders(1, start=50))
    run_until(svc_world, reader, service, log[-1][0] + 1)
    reader.stop()
    # I expect that event alone in its view
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(expected_view(read_log(svc_world)[-1:]))


def test_an_old_log_is_upcast_on_read_into_todays_view(svc_world):
    # Given a log written half by an older producer (item, customer_id, no qty), half by today's
    old = [json.dumps({"type": "new_order", "id": f"o-{i}", "args": {"item": f"sku-{i % 5}", "customer_id": f"c-{i % 7}"}})
           .encode() for i in range(40)]
    new = [json.dumps({"type": "new_order", "id": f"o-{i}", "args": {"sku": f"sku-{i % 5}", "customer": f"c-{i % 7}",
                                                                  "qty": 1}}).encode() for i in range(40, 80)]
    publish(svc_world, old + new)
    log = read_log(svc_world)
    # When a reader builds its view from the whole log
    service = svc_world.service_name("projector")
    reader = Reader(svc_world, service, enable_etcd=True)
    run_until(svc_world, reader, service, log[-1][0])
    reader.stop()
    # I expect the view of the same orders written today
    today = [json.dumps({"type": "new_order", "id": f"o-{i}", "args": {"sku": f"sku-{i % 5}", "customer": f"c-{i % 7}",
                                                                    "qty": 1}}).encode() for i in range(80)]
    assert projection.digest(state(svc_world, service)[1]) == projection.digest(
        expected_view(list(enumerate(today))))


def test_a_log_that_is_no_stream_leaves_the_topology_working_and_the_reader_exits_2(svc_world):
    # Given a classic queue where the log should be (as a broker without streams would leave it)
    topology.declare(svc_world.channel(), svc_world.exchange, services=())
    svc_world.channel().queue_declare(topology.log_name(svc_world.exchange), durable=True)
    # When a service declares the topology and an event is published ...
    orders = svc_world.service_name("orders")
    svc_world.start(orders)
    svc_world.publish(orders, {"type": "new_order", "id": "n-1"})
    # I expect the queue service to work as before ...
    wait_for(lambda: svc_world.effects(orders) == 1, "orders' effect", 15)
    # ... and a reader of the log to stop with one line (exit 2), not loop or crash
    reader = Reader(svc_world, svc_world.service_name("projector"), enable_etcd=True)
    assert reader.popen.wait(30) == 2
    assert f"the log {svc_world.exchange}.log exists with other arguments" in reader.log()
    assert f"{svc_world.exchange}.log is not a stream (PRECONDITION_FAILED - invalid arg 'x-stream-offset'" in reader.log()
    assert "Traceback" not in reader.log()


def test_a_log_declared_with_another_retention_keeps_its_own_with_one_warning(svc_world, caplog):
    # Given the log declared with a retention of 1 hour
    channel = topology.declare(svc_world.channel(), svc_world.exchange, services=())
    topology.declare_log(channel, svc_world.exchange, topology.log_arguments("1h", 0))
    # When a declarer asks for 7 days
    with caplog.at_level("WARNING", logger="svc.topology"):
        same = topology.declare_log(channel, svc_world.exchange, topology.log_arguments("7D", 0))
    # I expect its channel untouched, one warning saying why, and the log still taking events
    assert same is channel and channel.is_open
    [warning] = [r.getMessage() for r in caplog.records if r.name == "svc.topology"]
    assert warning.startswith(f"the log {svc_world.exchange}.log exists with other arguments (PRECONDITION_FAILED - "
                              "inequivalent arg 'x-max-age'") and "RabbitMQ never changes a queue's arguments" in warning
    publish(svc_world, orders(3))
    assert [offset for offset, _ in read_log(svc_world)] == [0, 1, 2]


def test_a_broker_without_streams_keeps_the_topology_working_with_one_line(tmp_path, caplog, etcd_endpoint):
    from conftest import need
    from nirvana.testing import RABBITMQ_SERVER, OwnRabbitMQ

    need("rabbitmq-server (Debian's package, to run a throwaway node)", os.path.exists(RABBITMQ_SERVER))
    # Given a fresh RabbitMQ node whose stream_queue feature flag is off
    node = OwnRabbitMQ(tmp_path / "rabbitmq", {"RABBITMQ_FEATURE_FLAGS": "quorum_queue,implicit_default_bindings,"
                                                "virtual_host_metadata,maintenance_mode_status,user_limits"})
    try:
        node.wait()
        assert "stream_queue\tdisabled" in node.ctl("list_feature_flags")
        # When the topology is declared and an event published (as every declarer does)
        connection = pika.BlockingConnection(pika.URLParameters(node.url))
        with caplog.at_level("ERROR", logger="svc.topology"):
            channel = topology.declare(connection.channel(), "events", services=("orders",))
        channel.confirm_delivery()
        channel.basic_publish("events", "foo", b'{"type": "new_order", "id": "1"}', mandatory=True)
        # I expect one line saying the log is not kept and why, and the service queue holding the event
        [line] = [r.getMessage() for r in caplog.records if r.name == "svc.topology"]
        assert line.startswith("RabbitMQ refused the log events.log (") and "enable_feature_flag stream_queue" in line
        assert connection.channel().queue_declare("events.orders", passive=True).method.message_count == 1
        connection.close()
        # and a reader of the log stopping with one line, exit status 2
        env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
        env.update(SERVICE_NAME="billing", SOURCE="log", AMQP_URL=node.url, ETCD_ENDPOINTS=etcd_endpoint,
                   ETCD_PREFIX=f"/t-{tmp_path.name}")
        done = subprocess.run([sys.executable, "-m", "svc"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "RabbitMQ refused reading the log events.log" in done.stderr and "Traceback" not in done.stderr
    finally:
        node.stop()
