"""nirvana.rabbit against the real RabbitMQ, each test on its own exchange and queues."""

import uuid

import pika
import pytest

from nirvana import endpoints, rabbit
from svc import topology
from svc.publish import Publisher


@pytest.fixture
def exchange(amqp_url):
    """A fresh exchange with queues for `orders` and `notify`, deleted afterwards."""
    name = f"nirvana-test-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    topology.declare(channel, exchange=name)
    yield name, channel
    topology.delete(channel, name, services=topology.DEFAULT_SERVICES)
    connection.close()


def test_queue_depth_counts_the_events_waiting_in_one_service_queue(exchange, amqp_url):
    name, channel = exchange
    assert rabbit.queue_depth("notify", exchange=name, url=amqp_url) == 0
    # When 3 events are published to the exchange, each service's queue holds 3
    for _ in range(3):
        channel.basic_publish(name, "foo", b'{"type":"new_order","id":"123"}')
    lines = []
    assert rabbit.wait_for_depth("notify", 3, exchange=name, timeout=5, progress=lines.append, url=amqp_url) == 3
    assert lines[-1] == f"{name}.notify: 3 waiting"
    assert rabbit.queue_depth("orders", exchange=name, url=amqp_url) == 3
    assert rabbit.dead_letters(exchange=name, url=amqp_url) == 0


def test_consumers_counts_who_consumes_a_service_queue(exchange, amqp_url):
    name, channel = exchange
    assert rabbit.consumers("orders", exchange=name, url=amqp_url) == 0
    channel.basic_consume(topology.queue_name("orders", name), lambda *args: None)
    assert rabbit.consumers("orders", exchange=name, url=amqp_url) == 1
    assert rabbit.consumers("notify", exchange=name, url=amqp_url) == 0


def test_a_queue_that_does_not_exist_yet_holds_nothing(amqp_url):
    counts = rabbit.queue_counts(f"nirvana-missing-{uuid.uuid4().hex[:8]}", url=amqp_url)
    assert counts == rabbit.QueueCounts(0, 0, exists=False)


def test_a_service_that_never_started_has_no_such_queue_not_zero(exchange, amqp_url):
    # Given orders and notify declared, and a third service `billing` not started yet
    name, channel = exchange
    try:
        # When an event is published, the broker confirms it and nothing is unroutable...
        with Publisher(amqp_url, name) as publisher:
            result = publisher.publish({"type": "new_order", "id": "b-1"}, routing_key="foo")
        assert (result.confirmed, result.unroutable) == (1, 0)
        assert rabbit.wait_for_depth("orders", 1, exchange=name, timeout=5, progress=lambda _: None, url=amqp_url) == 1
        # ...but billing's queue does not exist: I expect "no such queue", never 0
        for ask in (rabbit.queue_depth, rabbit.consumers):
            with pytest.raises(rabbit.NoSuchQueue) as caught:
                ask("billing", exchange=name, url=amqp_url)
            assert str(caught.value).startswith(f"no such queue {name}.billing:")
        with pytest.raises(TimeoutError, match="saw no such queue"):
            rabbit.wait_for_depth("billing", 0, exchange=name, timeout=0.5, progress=lambda _: None, url=amqp_url)
        # When billing's queue is declared later, the event published before is not in it: lost to billing
        with Publisher(amqp_url, name, services=("orders", "notify", "billing")):
            pass   # entering declares the named queues, billing's included
        assert rabbit.queue_depth("billing", exchange=name, url=amqp_url) == 0
        assert rabbit.queue_depth("orders", exchange=name, url=amqp_url) == 1
        # When billing's queue is deleted (the chapter's clean-up), it is no such queue again
        assert rabbit.delete_queue("billing", exchange=name, url=amqp_url) == 0
        with pytest.raises(rabbit.NoSuchQueue):
            rabbit.queue_depth("billing", exchange=name, url=amqp_url)
        assert rabbit.delete_queue("billing", exchange=name, url=amqp_url) == 0   # twice is fine
    finally:
        channel.queue_delete(topology.queue_name("billing", name))


def test_dead_letters_of_an_exchange_never_declared_is_no_such_queue(amqp_url):
    missing = f"nirvana-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(rabbit.NoSuchQueue, match=f"no such queue {missing}.dead-letters"):
        rabbit.dead_letters(exchange=missing, url=amqp_url)
    with pytest.raises(rabbit.NoSuchQueue, match=f"no such queue {missing}.dead-letters"):
        rabbit.peek_dead_letters(exchange=missing, url=amqp_url)


def test_rabbitmq_down_names_the_address_and_the_command_but_no_password():
    url = f"amqp://guest:s3cret@{endpoints.HOST}:9/%2F"   # nothing listens on the discard port
    with pytest.raises(rabbit.RabbitUnavailable) as caught:
        rabbit.queue_depth("orders", url=url)
    assert f"{endpoints.HOST}:9" in str(caught.value) and "`./kit up`" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_peek_dead_letters_shows_service_and_reason_and_loses_none(exchange, amqp_url):
    name, channel = exchange
    # Given two dead letters, as svc publishes them (reason and service in the headers)
    for service, reason in (("orders", "not JSON"), ("notify", "conflict: id '123'")):
        headers = {topology.SERVICE_HEADER: service, topology.REASON_HEADER: reason}
        channel.basic_publish(topology.dead_letter_exchange(name), "", b"x",
                              pika.BasicProperties(headers=headers))
    assert rabbit.wait_for_dead_letters(2, exchange=name, timeout=5, progress=lambda _: None, url=amqp_url) == 2
    # When I peek, I expect one sorted line per letter, and both letters still in the queue
    assert rabbit.peek_dead_letters(exchange=name, url=amqp_url) == [
        "notify: conflict: id '123'", "orders: not JSON"]
    assert rabbit.wait_for_dead_letters(2, exchange=name, timeout=5, progress=lambda _: None, url=amqp_url) == 2
