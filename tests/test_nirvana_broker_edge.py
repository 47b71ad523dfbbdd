"""Every broker call of the kit goes through svc's one broker edge (svc.amqp): bounded, one line.

Found with a listener that accepts TCP and never speaks AMQP: ``rabbit.queue_counts`` blocked 15 s
(pika's handshake default) past its 2 s CONNECT_TIMEOUT and raised AMQPConnectorStackTimeout,
which is no AMQPError, so the service panel and ``services.stop`` (waiting for the broker to
drop the consumer) raised it instead of saying "not answering".

The bounds checked here are each call's stated deadline (plus slack for a busy machine), not a
speed goal: a call that ignores its deadline waits pika's 15 s and fails them.
"""

import dataclasses
import socket
import threading
import time

import pytest

from nirvana import publisher, rabbit, services, settings, widgets

SLACK = 3.0   # seconds on top of a stated deadline (a loaded 2-core machine)


@pytest.fixture
def silent_broker():
    """An AMQP URL whose port accepts TCP connections and never answers the AMQP handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])   # keep it open, say nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"amqp://guest:s3cret@127.0.0.1:{listener.getsockname()[1]}/%2F"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    listener.close()


def timed(call):
    start = time.monotonic()
    try:
        return call(), None, time.monotonic() - start
    except Exception as error:   # the test asserts on the kind below
        return None, error, time.monotonic() - start


def one_line(error: BaseException) -> bool:
    return "\n" not in str(error) and "s3cret" not in str(error)


def test_queue_counts_fails_within_its_connect_timeout(silent_broker):
    _, error, took = timed(lambda: rabbit.queue_counts("events.orders", url=silent_broker))
    assert isinstance(error, rabbit.RabbitUnavailable), repr(error)
    assert one_line(error) and "`./kit up`" in str(error)
    assert took < rabbit.CONNECT_TIMEOUT + SLACK


def test_every_rabbit_helper_fails_the_same_way(silent_broker):
    for call in (lambda: rabbit.purge_queues(["events.orders"], url=silent_broker),
                 lambda: rabbit.peek_dead_letters(url=silent_broker),
                 lambda: rabbit.consumers("orders", url=silent_broker)):
        _, error, took = timed(call)
        assert isinstance(error, rabbit.RabbitUnavailable) and one_line(error), repr(error)
        assert took < rabbit.CONNECT_TIMEOUT + SLACK


def test_the_publish_panel_says_why_in_one_line_within_its_deadline(silent_broker):
    panel = widgets.PublishPanel(amqp_url=silent_broker)
    _, error, took = timed(panel.publish_button.click)
    assert error is None and panel.last_result is None
    assert panel.last_error and one_line(panel.last_error), panel.last_error
    assert took < publisher.PUBLISH_TIMEOUT + SLACK


@pytest.fixture
def broker_goes_silent(use_settings, silent_broker):
    """From now on the kit's settings point at the silent broker."""
    def go() -> None:
        use_settings(dataclasses.replace(settings.current(), amqp_url=silent_broker))
    return go


def test_the_service_panel_light_says_rabbitmq_is_not_answering(kit, broker_goes_silent):
    broker_goes_silent()
    panel = widgets.ServicePanel([kit["names"]["a"]], refresh_every=None)
    states, error, took = timed(panel.refresh)
    assert error is None, repr(error)
    assert "RabbitMQ not answering" in panel.lights[kit["names"]["a"]].value
    assert took < rabbit.CONNECT_TIMEOUT + SLACK


def test_stop_does_not_hang_or_raise_when_the_broker_goes_silent(kit, broker_goes_silent):
    # Given a running service, and then a broker that stops answering
    name = kit["names"]["a"]
    services.start(name, env=kit["env"], progress=lambda _: None)
    broker_goes_silent()
    # When the kit stops the service, I expect the stop done, the detach wait given up quietly
    stopped, error, took = timed(lambda: services.stop(name, timeout=2, progress=lambda _: None))
    assert error is None and stopped is True, repr(error)
    assert services.running(name) is None
    assert took < 2 + rabbit.CONNECT_TIMEOUT + SLACK
    # and a start to fail at once with the one line, not a traceback from pika
    _, error, took = timed(lambda: services.start(name, env=kit["env"], progress=lambda _: None))
    assert isinstance(error, rabbit.RabbitUnavailable) and one_line(error), repr(error)
    assert took < rabbit.CONNECT_TIMEOUT + SLACK
