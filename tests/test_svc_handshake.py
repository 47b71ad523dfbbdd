"""A connection lost at any step of the AMQP handshake is the broker being away, never a refusal
(issue 21, item 1), against the real RabbitMQ behind a proxy (nirvana.proxy.HandshakeProxy) that
closes a connection before the broker answers, after Connection.Start, after Connection.Tune, or
resets it. Only what the broker answered (a login refused, a vhost not found) stops svc, one line,
exit 2. pika names a stream lost during the protocol header "incompatible protocol", during
Start "probable authentication error" and during Tune "probable access denied" (pika/connection.py,
``_on_stream_terminated``): guesses, which svc used to read as refusals (pika/pika#830, #516)."""

import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

from nirvana.proxy import LOST_HANDSHAKES as LOST
from nirvana.proxy import HandshakeProxy
from nirvana.testing import wait_for


@pytest.fixture
def proxy(amqp_url):
    parts = urlsplit(amqp_url)
    with HandshakeProxy((parts.hostname, parts.port or 5672)) as proxy:
        yield proxy


def _exited(process, timeout: float = 20.0) -> int:
    wait_for(lambda: process.popen.poll() is not None, f"{process.service} to exit", timeout)
    return process.popen.returncode


@pytest.mark.slow
def test_a_connection_lost_at_any_step_of_the_handshake_is_retried_until_the_broker_answers(svc_world, proxy):
    orders = svc_world.service_name("orders")
    svc_world.publish(orders, {"type": "new_order", "id": "after-the-handshake"})
    # Given a proxy in front of the broker that loses each new connection at another step of the
    # handshake, in turn: EOF before any answer, after Connection.Start, after Connection.Tune, a reset...
    proxy.cycle = LOST
    [process] = svc_world.start(orders, wait=False, enable_etcd=True, amqp_url=proxy.url(svc_world.amqp_url))
    # ... I expect svc to keep trying (with backoff), through every kind twice, without exiting...
    wait_for(lambda: all(proxy.accepted[mode] >= 2 for mode in LOST) or not process.alive(),
             "svc retrying through every kind of lost handshake twice", timeout=60, interval=0.2)
    assert process.alive(), process.log()
    assert "refused" not in process.log()
    # ... and, once the broker is reachable again, to consume: the event waiting is processed.
    proxy.cycle, proxy.mode = (), "forward"
    wait_for(lambda: svc_world.effects(orders, "after-the-handshake") == 1, "the event processed", timeout=30)
    log = process.log()
    assert "Traceback" not in log and "reconnecting in" in log


@pytest.mark.parametrize("case", ["wrong password", "no such vhost", "another protocol"])
def test_what_the_broker_answered_still_stops_svc_with_one_line_and_exit_2(svc_world, proxy, case):
    orders = svc_world.service_name("orders")
    url = proxy.url(svc_world.amqp_url)
    if case == "wrong password":
        url, words = url.replace("guest@", "not-the-password@"), "user and password"
    elif case == "no such vhost":
        url, words = url.rsplit("/", 1)[0] + "/no-such-vhost", "vhost"
    else:   # a server that answers the protocol header with its own: it does not speak AMQP 0-9-1
        proxy.mode, words = "protocol", "protocol header"
    [process] = svc_world.start(orders, wait=False, amqp_url=url)
    assert _exited(process) == 2, process.log()
    log = process.log()
    [line] = [line for line in log.splitlines() if "refused" in line]
    assert words in line and "not-the-password" not in log and "Traceback" not in log


def test_svc_publish_reads_a_lost_handshake_as_the_broker_away_exit_1(svc_world, proxy):
    proxy.mode = "eof"
    result = subprocess.run([sys.executable, "-m", "svc.publish", "--amqp-url", proxy.url(svc_world.amqp_url),
                             "--exchange", svc_world.exchange, "--input", '{"type":"new_order","id":"1"}'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert "is RabbitMQ running" in line and "refused" not in line


def test_the_kits_batch_publisher_retries_a_lost_handshake(svc_world, proxy, kit_env):
    from nirvana.publisher import publish_bodies

    orders = svc_world.service_name("orders")
    # Given the proxy losing every handshake for a second...
    proxy.mode = "start"
    threading.Timer(1.0, lambda: setattr(proxy, "mode", "forward")).start()
    started = time.monotonic()
    # ... I expect the kit's batch publisher to try again, not to give up as refused.
    publish_bodies([b'{"type":"new_order","id":"1"}'], exchange=svc_world.exchange, url=proxy.url(svc_world.amqp_url))
    assert proxy.accepted["start"] >= 1 and time.monotonic() - started < 30
    wait_for(lambda: svc_world.depth(orders) == 1, "the event in the queue")
