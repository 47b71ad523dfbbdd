"""``python -m svc.publish`` against the real RabbitMQ: what is typed is what is published."""

import socket
import subprocess
import sys
import time

import pytest

from svc.errors import BrokerUnavailable
from svc.publisher import CLOSE_GRACE, Publisher


@pytest.mark.parametrize("text", ["3", "null", "[300]", '"new_order"', '"caf\u00e9"', "true", " [1, 2] "])
def test_json_that_is_not_an_object_is_published_as_typed(svc_world, text):
    orders = svc_world.service_name("orders")
    # Given valid JSON that is not an event object, when published from the command line...
    result = subprocess.run([sys.executable, "-m", "svc.publish", "--amqp-url", svc_world.amqp_url,
                             "--exchange", svc_world.exchange, "--service", orders, "--input", text],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # ... I expect exactly its text in the queue (UTF-8), for the consumer to dead-letter.
    method, _, body = svc_world.channel().basic_get(svc_world.queue(orders), auto_ack=True)
    assert method is not None and body == text.encode("utf-8")


@pytest.mark.parametrize("event", [3, None, [300], 1.5])
def test_the_publisher_refuses_what_is_not_a_dict_str_or_bytes(event):
    with pytest.raises(TypeError, match="dict, str or bytes"):
        Publisher("amqp://guest:guest@127.0.0.1:1/%2F", declare=False).publish(event)


@pytest.mark.parametrize("declare", [True, False])
def test_a_broker_that_never_answers_cannot_hold_publish_past_its_deadline(declare):
    # Given a server that takes the TCP connection (the kernel accepts it from the backlog) and
    # never says a word of AMQP...
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"amqp://guest:s3cret@127.0.0.1:{server.getsockname()[1]}/%2F"
        publisher = Publisher(url, services=(), declare=declare, timeout=1.0)
        # ... when publishing, I expect an error within the timeout (and the grace to close).
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as raised:
            publisher.publish({"type": "new_order", "id": "1"})
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + CLOSE_GRACE + 0.5, elapsed
    assert "s3cret" not in str(raised.value)


def test_fresh_ids_are_distinct_and_keep_the_events_id_in_front():
    import re

    from svc.publisher import _fresh_ids

    # Given 100,000 fresh ids in one publish and 1,000 in another...
    first, second = _fresh_ids("o", 100000), _fresh_ids(5, 1000)
    # ... I expect each "<id>-<12 hex digits>", none twice.
    assert all(re.fullmatch(r"o-[0-9a-f]{12}", i) for i in first) and second[0].startswith("5-")
    assert len(set(first) | set(second)) == 101000


def test_confirms_count_each_event_once_multiple_or_not():
    import pika

    from svc.publisher import ConfirmedBatch

    # Given 6 events sent, of which the broker acks 2 singly, then 1-4 at once, nacks 5, then acks 6...
    batch = ConfirmedBatch("amqp://x", "events", "foo", [b"{}"] * 6, [""] * 6, 1.0)
    batch.pending.update(range(1, 7))
    batch._close = lambda: None  # no connection here: the counting alone
    frame = lambda method: type("Frame", (), {"method": method})  # noqa: E731
    for method in (pika.spec.Basic.Ack(2), pika.spec.Basic.Ack(4, multiple=True), pika.spec.Basic.Nack(5),
                   pika.spec.Basic.Ack(6)):
        batch._on_confirm(frame(method))
    # ... I expect 5 confirmed and 1 nacked, none counted twice.
    assert (batch.confirmed, batch.nacked, batch.pending) == (5, 1, set())
