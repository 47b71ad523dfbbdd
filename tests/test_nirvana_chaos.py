"""nirvana.chaos at a small size against the real RabbitMQ, svc processes and a throwaway etcd.

The kit's service records live in a state folder of the test's own (NIRVANA_STATE), so the run
neither sees nor stops the services of a notebook running meanwhile; its exchange and etcd are
its own too.
"""

import os
import shutil

import pytest
from conftest import need

from nirvana import chaos, stack


@pytest.fixture
def own_state(tmp_path, monkeypatch, amqp_url):
    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    need("rabbitmqctl (on PATH, to close a connection)", shutil.which("rabbitmqctl") is not None)
    node = stack.rabbitmq_node()   # the kit's node is named in the kit's state folder, not the test's
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    return node


def test_workload_publishes_each_id_once_and_a_share_twice_later():
    ids, bodies = chaos.workload(chaos.Plan(events=100, duplicate_share=0.1), "w")
    assert ids == [f"w-{i}" for i in range(100)]
    assert len(bodies) == 110 and len(set(bodies)) == 100
    seen = []
    for body in bodies:
        event_id = body.split(b'"id": "')[1].split(b'"')[0].decode()
        assert event_id not in seen or seen.count(event_id) == 1
        seen.append(event_id)
    # a second copy comes after its first
    assert all(seen.index(i) < len(seen) - 1 - seen[::-1].index(i) for i in set(seen) if seen.count(i) == 2)


@pytest.mark.slow
def test_claims_survive_every_fault_and_dedup_off_is_caught(own_state):
    # Given kills at both crash points, a cut connection and an etcd restart, with claims...
    report = chaos.run(chaos.Plan(events=300, kills=6), progress=print, node=own_state)
    assert report.sigkills >= 6 and set(report.crash_points) == {"claimed", "done"}
    assert any("etcd restarted" in fault for fault in report.faults)
    assert any("closed by rabbitmqctl (1 closed)" in fault for fault in report.faults)
    # ... I expect every id processed exactly once by each service, nothing left.
    assert report.ok, report.table()
    assert [(row.published, row.processed_once) for row in report.rows] == [(300, 300), (300, 300)]
    # Without deduplication the same checker must fail: the ids published twice are duplicated.
    control = chaos.run(chaos.without_dedup(chaos.Plan(events=300, kills=2, crash_points=False,
                                                       cut=False, etcd_restart=False)), progress=print,
                        node=own_state)
    assert not control.ok
    assert all(row.duplicated >= 30 and row.lost == 0 for row in control.rows), control.table()


@pytest.mark.slow
def test_a_broker_restart_and_lost_handshakes_make_no_service_exit(request, tmp_path, monkeypatch):
    from conftest import in_own_namespace

    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    node, started = stack.rabbitmq_node(), False
    if not node.started_by_kit:
        # The machine's broker is never restarted: run in a network namespace of the test's own,
        # where the kit starts its own node.
        if not in_own_namespace(request, tmp_path):
            return
        stack.up(progress=print, only=["rabbitmq"])
        node, started = stack.rabbitmq_node(), True
    kit_state = os.environ.get("NIRVANA_STATE")   # where the node started above is recorded
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "run-state"))
    try:
        # Given the kit's own RabbitMQ restarted mid-run, and the services behind a proxy that cuts
        # their connections, then loses every handshake for a few seconds (EOF, after Start, after
        # Tune, reset), beside the kills, the crash points, a cut and an etcd restart...
        plan = chaos.Plan(events=300, kills=6, broker_restart=True, lost_handshakes=True)
        report = chaos.run(plan, progress=print, node=node)
        assert any(fault.startswith("RabbitMQ restarted") for fault in report.faults), report.faults
        [proxy] = [fault for fault in report.faults if fault.startswith("proxy:")]
        assert "proxy: 0 broker" not in proxy and " 0 handshakes lost" not in proxy, proxy
        # ... I expect no replica to exit by itself, and every id processed once by each service.
        assert report.exits == (), report.exits
        assert report.ok, report.table()
        # With dedup off the same faults: still no exit, and the checker flags the duplicates.
        control = chaos.run(chaos.without_dedup(chaos.Plan(events=300, kills=2, crash_points=False, cut=False,
                                                           etcd_restart=False, broker_restart=True,
                                                           lost_handshakes=True)), progress=print, node=node)
        assert control.exits == (), control.exits
        assert not control.ok and all(row.duplicated >= 30 for row in control.rows), control.table()
    finally:
        if started:
            os.environ["NIRVANA_STATE"] = kit_state
            stack.down(progress=print, only=["rabbitmq"])
