"""nirvana.testing's World against the real RabbitMQ and etcd: its teardown leaves nothing behind."""

import subprocess
import threading
import time

import pika
import pika.exceptions
import pytest

from svc import Etcd, topology
from svc.config import parse_endpoints
from nirvana.testing import World


class StuckProcess:
    """A service process whose SIGKILL is not reaped in time (as ServiceProcess.kill raises)."""

    service, pid = "orders", 0

    def alive(self) -> bool:
        return True

    def kill(self) -> int:
        raise subprocess.TimeoutExpired(["python", "-m", "svc"], 10)


def test_a_process_that_will_not_die_does_not_keep_the_queues_and_keys(amqp_url, etcd_endpoint, tmp_path):
    # Given a world with a queue, a key and a process that will not die...
    world = World(amqp_url, etcd_endpoint, tmp_path)
    orders = world.service_name("orders")
    queue, exchange, prefix = world.queue(orders), world.exchange, world.prefix
    world.etcd.put(f"{prefix}/dedup/{orders}/1", "done x")
    world.processes.append(StuckProcess())
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    etcd = Etcd(parse_endpoints(etcd_endpoint))
    try:
        # ... when it closes, I expect the stuck process reported, and the queues and keys gone anyway.
        with pytest.raises(TimeoutError, match="did not die"):
            world.close()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            connection.channel().queue_declare(queue, passive=True)
        assert etcd.count_prefix(prefix + "/") == 0
    finally:  # in case close() did not
        topology.delete(connection.channel(), exchange, services=(orders,))
        connection.close()
        etcd.delete_prefix(prefix + "/")
        etcd.close()


def test_start_does_not_count_a_consumer_that_is_going_away(amqp_url, etcd_endpoint, tmp_path):
    # Given a consumer on the queue that is going away (as a process SIGKILLed a moment ago is,
    # until the broker has closed its connection): found in a test of CRASH_AT=done, whose next
    # start waited for 2 consumers where 1 would ever come
    world = World(amqp_url, etcd_endpoint, tmp_path)
    orders = world.service_name("orders")
    lingering = pika.BlockingConnection(pika.URLParameters(amqp_url))
    lingering.channel().basic_consume(world.queue(orders), lambda *args: None)
    # closed from a timer thread: this thread does not touch that connection meanwhile
    closer = threading.Timer(1.0, lingering.close)
    try:
        closer.start()
        # When the world starts the service while that consumer is still there
        [process] = world.start(orders)
        # I expect the start to wait for its own consumer only (not time out waiting for two)
        assert process.alive() and world.consumers(orders) == 1
    finally:
        closer.join()
        world.close()


def test_a_world_whose_idle_connection_the_broker_closed_connects_again(amqp_url, etcd_endpoint, tmp_path,
                                                                       monkeypatch):
    from nirvana import testing
    from nirvana.proxy import HandshakeProxy

    monkeypatch.setattr(testing, "IDLE_PROBE", 0.4, raising=False)

    # Given a world whose own connection (through a relay) sat idle while others worked, and was
    # closed under it (the broker closes one that missed two heartbeats: bench_svc's dead-sibling
    # pairs on a cluster, a StreamLostError at the world's next declaration)...
    broker = pika.URLParameters(amqp_url)
    with HandshakeProxy((broker.host, broker.port)) as proxy:
        world = World(proxy.url(amqp_url), etcd_endpoint, tmp_path)
        try:
            orders = world.service_name("orders")
            proxy.cut()
            time.sleep(0.5)   # (idle for longer than IDLE_PROBE)
            # ... I expect its next use to open a new connection, not to raise
            assert world.depth(orders) == 0
            assert world.service_name("notify")
        finally:
            world.close()
