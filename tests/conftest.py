"""Shared fixtures: the real services the tests talk to.

A fixture checks its service when asked for it. In CI (CI=true) a missing service fails the
test; elsewhere it is skipped with the command that starts it.
"""

import os
import socket

import pytest

from nirvana import endpoints, stack

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_HINT = "start the stack with `./kit up`"


def need(what: str, ok: bool) -> None:
    """Fail (in CI) or skip (elsewhere) when a service the test needs is not answering."""
    if ok:
        return
    message = f"{what} is not answering: {START_HINT}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def native_only(*components: str) -> None:
    """Skip a test that stops these components or reads their files under state/ when one of them
    was found running instead of started by the kit (a docker-compose stack): the kit never stops
    what it did not start, and a container keeps its files inside."""
    found = [row.name for row in stack.status(components) if row.origin == "found running"]
    if found:
        pytest.skip(f"{', '.join(found)} found running, not started by the kit (a docker-compose stack?): "
                    "this test stops it or reads its files under state/; run it on the native stack "
                    "(`docker compose down`, then `./kit up`)")


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> str:
    need(f"RabbitMQ on {endpoints.HOST}:{endpoints.AMQP_PORT}", tcp_open(endpoints.HOST, endpoints.AMQP_PORT))
    return endpoints.AMQP_URL


@pytest.fixture(scope="session")
def etcd_endpoint() -> str:
    need(f"etcd on {endpoints.ETCD_ENDPOINT}", tcp_open(endpoints.HOST, endpoints.ETCD_PORT))
    return endpoints.ETCD_ENDPOINT


@pytest.fixture(scope="session")
def graphite_url() -> str:
    need(f"graphite-web on {endpoints.GRAPHITE_URL}", tcp_open(endpoints.HOST, endpoints.GRAPHITE_PORT))
    need(f"statsd admin on {endpoints.HOST}:{endpoints.STATSD_ADMIN_PORT}",
         tcp_open(endpoints.HOST, endpoints.STATSD_ADMIN_PORT))
    return endpoints.GRAPHITE_URL


def pytest_collection_modifyitems(config, items):
    """Tests marked ``stack`` stop or restart components: run them last (after the notebooks too),
    so nothing else sees the stack go down; each leaves the stack up."""
    items.sort(key=lambda item: item.get_closest_marker("stack") is not None)


@pytest.fixture
def svc_world(amqp_url, etcd_endpoint, tmp_path):
    """An isolated svc world: its own exchange, etcd prefix and service names, services run as real
    ``python -m svc`` processes; on teardown it kills them, then removes its queues and keys."""
    from svc.testing import World

    world = World(amqp_url, etcd_endpoint, tmp_path, statsd=(endpoints.HOST, endpoints.STATSD_PORT),
                  rabbitmqctl=stack.rabbitmq_node().ctl())
    yield world
    world.close()
