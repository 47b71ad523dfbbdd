"""svc.testing's World against the real RabbitMQ and etcd: its teardown leaves nothing behind."""

import subprocess

import pika
import pika.exceptions
import pytest

from svc import Etcd, topology
from svc.config import parse_endpoints
from svc.testing import World


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
