"""Every publish the broker refuses is a PublishError naming the reason, exit status 2, nothing
stored (issue 21, item 3), against the real RabbitMQ: checked before sending where the rule is
known (a routing key is an AMQP shortstr, at most 255 bytes; an exchange name under ``amq.`` is
the broker's, never declared), read from the broker's answer otherwise (a body over the node's
``max_message_size``: RabbitMQ closes the channel with 406 PRECONDITION_FAILED "message size N is
larger than configured max size M")."""

import subprocess
import sys
import time
import uuid

import pika
import pytest

from svc import topology
from svc.errors import BrokerRefused, PublishError
from svc.publisher import Publisher

MAX_SIZE = 4096   # bytes: the throwaway node's max_message_size in the test


def _cli(url: str, *args: str):
    return subprocess.run([sys.executable, "-m", "svc.publish", "--amqp-url", url, *args],
                          capture_output=True, text=True, timeout=60)


def _depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_body_over_max_message_size_is_refused_by_name_exit_2_nothing_stored(own_rabbitmq, tmp_path, monkeypatch):
    from nirvana.publisher import publish_bodies

    # Given a node whose max_message_size is 4 KiB (a throwaway node: the kit's or the machine's
    # broker is never reconfigured)...
    own_rabbitmq.ctl("eval", f"application:set_env(rabbit, max_message_size, {MAX_SIZE}).")
    exchange = f"t-{uuid.uuid4().hex[:6]}"
    big = '{"type":"new_order","id":"big","args":{"pad":"' + "x" * MAX_SIZE + '"}}'
    # ... when svc.publish sends a bigger event (3 copies)...
    result = _cli(own_rabbitmq.url, "--exchange", exchange, "--service", "orders", "--input", big, "--count", "3")
    # ... I expect one line with the broker's reason, exit 2, and nothing in the queue.
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert "larger than configured max size" in line and "max_message_size" in line, line
    assert "is RabbitMQ running" not in line
    assert _depth(own_rabbitmq.url, topology.queue_name("orders", exchange)) == 0
    # The kit's batch publisher: the same refusal at once, not 10 attempts at it.
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    started = time.monotonic()
    with pytest.raises(PublishError, match="larger than configured max size") as refused:
        publish_bodies([big.encode()], exchange=exchange, url=own_rabbitmq.url, routing_key="foo")
    assert isinstance(refused.value, BrokerRefused) and time.monotonic() - started < 5
    assert _depth(own_rabbitmq.url, topology.queue_name("orders", exchange)) == 0


@pytest.mark.parametrize("routing_key", ["k" * 256, "é" * 128], ids=["ascii", "two-byte"])   # 256 bytes either way
def test_a_routing_key_over_255_bytes_is_refused_before_sending(svc_world, routing_key):
    orders = svc_world.service_name("orders")
    result = _cli(svc_world.amqp_url, "--exchange", svc_world.exchange, "--service", orders,
                  "--routing-key", routing_key, "--input", '{"type":"new_order","id":"1"}')
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert "routing key" in line and "255 bytes" in line and "256" in line, line
    with pytest.raises(PublishError, match="255 bytes"):
        Publisher(svc_world.amqp_url, svc_world.exchange, services=(orders,)).publish({"id": "1"}, routing_key)
    assert svc_world.depth(orders) == 0


def test_the_kits_batch_publisher_refuses_a_long_routing_key_at_once(svc_world, kit_env):
    from nirvana.publisher import publish_bodies

    orders = svc_world.service_name("orders")
    with pytest.raises(PublishError, match="255 bytes"):
        publish_bodies([b"{}"], exchange=svc_world.exchange, url=svc_world.amqp_url, routing_key="k" * 300)
    assert svc_world.depth(orders) == 0


def test_an_exchange_under_the_reserved_amq_prefix_is_refused_before_connecting(svc_world):
    # Given a URL nothing answers at: the refusal must come before any connection
    result = _cli("amqp://guest:guest@127.0.0.1:1/%2F", "--exchange", "amq.orders", "--input",
                  '{"type":"new_order","id":"1"}')
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert "amq." in line and "reserved" in line and "is RabbitMQ running" not in line, line
    with pytest.raises(PublishError, match="reserved"):
        Publisher(svc_world.amqp_url, "amq.orders", services=()).publish({"id": "1"})


def test_events_the_broker_nacks_are_named_with_the_likely_reason(svc_world):
    orders = svc_world.service_name("orders")
    # Given the service's queue full and refusing publishes (max-length 0, overflow reject-publish)...
    svc_world.set_policy("full", f"^{svc_world.queue(orders)}$", {"max-length": 0, "overflow": "reject-publish"})
    result = _cli(svc_world.amqp_url, "--exchange", svc_world.exchange, "--service", orders,
                  "--input", '{"type":"new_order","id":"1"}', "--count", "2")
    # ... I expect exit 1 (a later try may succeed) with a line saying why they were not stored.
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "0 confirmed, 0 unroutable, 2 nacked" in result.stdout
    [line] = result.stderr.splitlines()
    assert "2 events were nacked" in line and "reject-publish" in line, line
