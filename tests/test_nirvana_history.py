"""Time travel against the real broker and etcd: the read model as it stood at a past moment,
rebuilt from the log's events before it, equal to the view svc's reader had built at that moment."""

import datetime
import json
import time

import pika
import pytest

from nirvana import history, replay
from nirvana.publisher import Publisher, publish_bodies
from svc import projection, topology
from svc.event import parse
from svc.stream import OFFSET_HEADER, log_end, log_start
from nirvana.testing import wait_for


def orders(count: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"type": "new_order", "id": f"t-{i}",
                        "args": {"sku": f"sku-{i % 4}", "customer": f"c-{i % 6}", "qty": 1 + i % 2}}).encode()
            for i in range(start, start + count)]


def offsets(kit_env) -> list[int]:
    """Every offset the log delivers, from its first event (a bare pika reader)."""
    end, got = log_end(kit_env["url"], kit_env["exchange"]), []
    connection = pika.BlockingConnection(pika.URLParameters(kit_env["url"]))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=500)

        def on_message(channel, method, properties, body):
            got.append(int(properties.headers[OFFSET_HEADER]))
            channel.basic_ack(method.delivery_tag)

        channel.basic_consume(topology.log_name(kit_env["exchange"]), on_message, arguments={OFFSET_HEADER: "first"})
        deadline = time.monotonic() + 10
        while (not got or got[-1] < end) and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass
    return got


@pytest.mark.slow
def test_the_state_as_of_a_past_moment_is_the_view_the_reader_had_then(kit_env):
    # Given a log in segments of 100 bytes (a new segment, so an offset skipped, before nearly every
    # chunk), 120 orders, billing's view built from them by svc's reader, a moment, then 80 more
    replay.reset_log(max_bytes=10_000_000, segment_bytes=100)
    with Publisher():
        pass
    early = orders(120)
    publish_bodies(early + [early[5]])   # a copy, as a publisher's retry leaves one
    then = replay.rebuild("billing", progress=lambda line: None)
    time.sleep(1.2)
    moment = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.2)   # the log tells time in whole seconds
    publish_bodies(orders(80, start=120))
    now = replay.rebuild("billing", progress=lambda line: None)
    kept = offsets(kit_env)
    after = history.first_offset_at(moment)
    # (the trap: the offset before the first one after the moment is no event of the log)
    assert after - 1 not in kept and after in kept
    # When the state as of the moment is rebuilt
    past = history.as_of(moment)
    # I expect the view billing's reader had built then, ending at the last event before the moment
    assert past.digest == then.digest == projection.digest(projection.build(map(parse, early)))
    assert past.end == then.end == max(offset for offset in kept if offset < after)
    assert past.events == len(early) + 1
    # ... and, as of now, the view of the whole log; before the first event, nothing
    assert history.as_of(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).digest == now.digest
    assert history.as_of(moment - datetime.timedelta(hours=1)) == history.AsOf(
        moment - datetime.timedelta(hours=1), None, 0, {}, projection.digest({}))


def test_a_moment_without_a_zone_or_a_log_that_lost_its_first_events_is_refused_in_one_line(kit_env):
    with pytest.raises(ValueError, match=r"^a moment needs its zone"):
        history.as_of(datetime.datetime(2026, 12, 6, 5, 0))
    replay.reset_log()   # it returns once the new log takes a reader: read at once
    with pytest.raises(replay.RebuildError, match=rf"^the log {kit_env['exchange']}.log is empty"):
        history.as_of(datetime.datetime.now(datetime.timezone.utc))
    # Given a log whose retention dropped its first segments
    replay.reset_log(max_bytes=20_000, segment_bytes=2_000)
    with Publisher():
        pass
    publish_bodies(orders(150))
    publish_bodies(orders(150, start=150))
    wait_for(lambda: log_start(kit_env["url"], kit_env["exchange"]), "retention to drop a segment", 60)  # RabbitMQ applies it as segments roll: slow on a loaded machine
    # I expect a refusal naming what is missing, rather than a wrong state
    with pytest.raises(replay.RebuildError, match=rf"^the log {kit_env['exchange']}.log keeps offsets from \d+ only "
                                                    r"\(retention dropped the events before\): the state as of "):
        history.as_of(datetime.datetime.now(datetime.timezone.utc))
