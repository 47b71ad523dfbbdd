"""The later chapters' helpers (chaos, designs, cost) take their broker, exchange, etcd and prefix
from nirvana.settings, as every other helper does, never from the single-node constants of
nirvana.endpoints: with `./kit up --cluster` recorded, or a learner's exported variables, they
publish, count and measure where the kit's services run.

Found reading the code: chaos published its slices to 127.0.0.1:5672 while the services it
started consumed from the settings' broker (a recorded cluster's nodes).
"""

import subprocess
import uuid

import pytest

from conftest import need_rabbitmqctl
from nirvana import chaos, cost, designs, stack
from svc.errors import DedupUnavailable


@pytest.fixture
def vhost(amqp_url):
    """The AMQP URL of a vhost of the test's own on the stack's RabbitMQ (guest allowed), deleted
    afterwards: a broker the single-node constants do not name."""
    need_rabbitmqctl("to add a vhost of the test's own")
    ctl = stack.rabbitmq_node().ctl()
    name = f"nirvana-test-{uuid.uuid4().hex[:8]}"

    def run(*command: str) -> None:
        subprocess.run([*ctl, "-q", *command], capture_output=True, timeout=120, check=True)
    run("add_vhost", name)
    run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"{amqp_url.rsplit('/', 1)[0]}/{name}"
    run("delete_vhost", name)


def test_a_chaos_run_publishes_to_the_settings_broker(kit_env, vhost, monkeypatch, tmp_path, use_settings):
    # Given AMQP_URL exported naming another vhost (as a recorded cluster names other ports)
    node = stack.rabbitmq_node()
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("AMQP_URL", vhost)
    use_settings(None)
    # When a small chaos run without faults runs
    plan = chaos.Plan(events=40, replicas=1, kills=0, crash_points=False, cut=False, etcd_restart=False,
                      drain_timeout=20)
    report = chaos.run(plan, progress=print, node=node)
    # I expect its events where its services consume: every id processed once by each
    assert report.ok, report.table()
    assert [row.processed_once for row in report.rows] == [40, 40]


def test_the_designs_scenario_publishes_and_counts_where_the_settings_say(kit_env):
    # Given EVENTS_EXCHANGE and ETCD_PREFIX exported (kit_env), when two replicas race on 3 ids
    outcome = designs.replicas_race("claims", ids=3, work_ms=20, progress=print)
    # I expect the copies to reach the services' queue and the effects counted under the prefix
    assert (outcome.published, outcome.processed, outcome.double) == (6, 3, 0)


def test_the_etcd_round_trip_asks_the_settings_etcd(monkeypatch, use_settings):
    # Given ETCD_ENDPOINTS exported naming a member that does not answer (nothing listens on port 9)
    monkeypatch.setenv("ETCD_ENDPOINTS", "127.0.0.1:9")
    use_settings(None)
    # I expect the measurement to ask it, and say it is away (not the stack's etcd on 2379)
    with pytest.raises(DedupUnavailable):
        cost.etcd_round_trip_ms(samples=1)
