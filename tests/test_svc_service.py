"""``python -m svc`` against the real RabbitMQ, etcd and statsd/Graphite: the talk, as tests."""

import os
import signal
import socket

import pytest

from svc import keys, metrics
from svc.config import VARIABLES
from nirvana.testing import ServiceProcess, graphite_total, wait_for
from svc.topology import REASON_HEADER, ROUTING_KEY_HEADER, SERVICE_HEADER

from test_svc_event import BAD_INPUT

NEW_ORDER = {"type": "new_order", "id": "123"}


def test_chapter_3_idempotency(svc_world):
    orders = svc_world.service_name("orders")
    # Given orders without etcd, when the same event comes three times, it is processed each time.
    svc_world.start(orders)
    svc_world.publish(orders, NEW_ORDER, count=3)
    wait_for(lambda: svc_world.effects(orders, "123") >= 3, "3 effects without dedup")
    [process] = svc_world.processes
    assert process.stop() == 0
    assert svc_world.effects(orders, "123") == 3
    # When restarted with ENABLE_ETCD=true: the first is processed, the repeats are skipped.
    svc_world.start(orders, enable_etcd=True)
    svc_world.publish(orders, NEW_ORDER, count=3)
    svc_world.publish(orders, {"type": "new_order", "id": "124"})
    wait_for(lambda: svc_world.effects(orders, "124") == 1 and svc_world.depth(orders) == 0, "124 processed")
    assert svc_world.effects(orders, "123") == 4
    assert svc_world.processes[-1].stop() == 0
    # When restarted again, the repeats are skipped at once: the done ids were imported at start.
    svc_world.start(orders, enable_etcd=True)
    assert "imported 2 done ids" in svc_world.processes[-1].log()
    svc_world.publish(orders, NEW_ORDER, count=3)
    svc_world.publish(orders, {"type": "new_order", "id": "125"})
    wait_for(lambda: svc_world.effects(orders, "125") == 1 and svc_world.depth(orders) == 0, "125 processed")
    assert svc_world.effects(orders, "123") == 4
    assert svc_world.effects(orders) == 6


def test_every_metric_name_reaches_graphite(svc_world, graphite_url):
    orders, notify = svc_world.service_name("orders"), svc_world.service_name("notify")
    # Given both services on one exchange (each queue bound with #, so each gets every event)...
    for service in (orders, notify):
        svc_world.start(service, enable_etcd=True)
    publisher = svc_world.publisher(orders, notify)
    publisher.publish({"type": "new_order", "id": "o1"}, count=2)                     # ok + skipped
    publisher.publish({"type": "ban_user", "id": "u1", "args": {"user": "mallory"}}, count=2)
    publisher.publish({"type": "new_order", "id": "o1", "args": {"other": True}})      # conflict
    publisher.publish(b"not json")                                                    # invalid
    expected = {}
    for service in (orders, notify):
        expected.update({metrics.ok(service, "new_order"): 1, metrics.skipped(service, "new_order"): 1,
                         metrics.ok(service, "ban_user"): 1, metrics.skipped(service, "ban_user"): 1,
                         metrics.conflict(service, "new_order"): 1, metrics.invalid(service): 1})
    targets = {f"stats_counts.{name}": count for name, count in expected.items()}
    for service in (orders, notify):
        for kind in ("new_order", "ban_user"):
            targets[f"stats.timers.{metrics.timer(service, kind)}.count"] = 1
    # Then Graphite shows each name with its count (statsd flushes every second).
    wait_for(lambda: all(_total(graphite_url, t) >= n for t, n in targets.items()),
             "every metric in Graphite", timeout=20, interval=0.5)
    assert {t: graphite_total(graphite_url, t) for t in targets} == targets
    # The names are the talk's (metrics.* builds them; this pins one to the literal name).
    assert f"stats_counts.{orders}_new_order_ok" in targets


def _total(graphite_url, target):
    """The total so far; 0 while graphite-web does not answer (a stack restart), until the deadline."""
    try:
        return graphite_total(graphite_url, target)
    except OSError:
        return 0


def test_bad_input_is_dead_lettered_and_the_consumer_goes_on(svc_world):
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=True)
    publisher = svc_world.publisher(orders)
    # Given every kind of bad input, each between two good events...
    for n, (name, body, _) in enumerate(BAD_INPUT):
        publisher.publish({"type": "new_order", "id": f"good-{n}"})
        assert publisher.publish(body).ok, name
    publisher.publish({"type": "new_order", "id": "good-last"})
    # ... I expect each dead-lettered with its reason and the service, and every good one processed.
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == len(BAD_INPUT) + 1, "every good event processed")
    letters = []
    wait_for(lambda: letters.extend(svc_world.dead_letters()) or len(letters) >= len(BAD_INPUT), "every dead letter")
    assert process.alive()
    assert sorted(body for body, _ in letters) == sorted(body for _, body, _ in BAD_INPUT)
    reasons = {body: headers for body, headers in letters}
    for name, body, words in BAD_INPUT:
        headers = reasons[body]
        assert words in headers[REASON_HEADER], name
        assert headers[SERVICE_HEADER] == orders and headers[ROUTING_KEY_HEADER] == "foo"
    assert set(svc_world.effects_by_id(orders).values()) == {1}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_finishes_acks_and_exits_0(svc_world, signum):
    orders = svc_world.service_name("orders")
    [process] = svc_world.start(orders, enable_etcd=True, work_ms=1500)
    svc_world.publish(orders, {"type": "new_order", "id": "slow"}, count=1)
    claim = keys.dedup_key(svc_world.prefix, orders, "slow")
    wait_for(lambda: (svc_world.etcd.get(claim) or b"").startswith(b"claimed"), "the event claimed (work begun)")
    # Given an event in the middle of its work, when signalled, I expect it finished and acked.
    process.signal(signum)
    assert process.popen.wait(10) == 0
    assert svc_world.effects(orders, "slow") == 1
    assert svc_world.etcd.get(claim).startswith(b"done")
    assert svc_world.depth(orders) == 0 and svc_world.consumers(orders) == 0
    assert "stopped" in process.log() and "Traceback" not in process.log()


def test_a_broker_that_never_answers_is_retried_not_a_crash(tmp_path):
    # Given AMQP_URL pointing at a port that takes the connection and never speaks AMQP...
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
        env.update(SERVICE_NAME="orders", PYTHONUNBUFFERED="1",
                   AMQP_URL=f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}/%2F?stack_timeout=0.5")
        process = ServiceProcess("orders", env, tmp_path / "orders.log")
        try:
            # ... I expect the handshake timeout treated as the broker being away: retried, logged.
            wait_for(lambda: process.log().count("reconnecting") >= 2 or not process.alive(),
                     "two reconnect attempts", timeout=15)
            assert process.alive(), process.log()
            assert process.stop() == 0 and "Traceback" not in process.log()
        finally:
            process.kill()
