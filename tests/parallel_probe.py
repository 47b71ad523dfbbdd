"""Run only by tests/test_parallel.py (``pytest -n 2`` over this file): each test writes where it
ran — its xdist worker, network namespace, state folder, and whether a RabbitMQ, etcd and statsd
answer there — as one JSON line to the file named by NIRVANA_PARALLEL_PROBE."""

import json
import os
import time

import pytest

from nirvana import endpoints, launcher, stack


def record(name: str) -> None:
    row = {
        "test": name,
        "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "netns": os.readlink("/proc/self/ns/net"),
        "state": os.environ.get("NIRVANA_STATE"),
        "answering": [port for port in (endpoints.AMQP_PORT, endpoints.ETCD_PORT, endpoints.STATSD_ADMIN_PORT)
                      if launcher.tcp_open(port, endpoints.HOST, 2.0)],
        "rabbitmq": [row.origin for row in stack.status(["rabbitmq"])],
    }
    with open(os.environ["NIRVANA_PARALLEL_PROBE"], "a") as out:
        out.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("n", range(4))
def test_anywhere(n):
    record(f"anywhere-{n}")


@pytest.mark.cluster
@pytest.mark.parametrize("n", range(2))
def test_one_cluster_at_a_time(n):
    record(f"cluster-{n}")


def test_hold():
    """Records, then holds its worker (up to 120 s) until NIRVANA_PARALLEL_PROBE.end exists: the run
    is killed meanwhile (tests/test_parallel.py)."""
    record("hold")
    end = os.environ["NIRVANA_PARALLEL_PROBE"] + ".end"
    for _ in range(1200):
        if os.path.exists(end):
            return
        time.sleep(0.1)   # the probe's own hold: the test kills the run meanwhile
