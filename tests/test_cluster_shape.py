"""The cluster's shape and how the kit follows it, without starting anything: the shape recorded
in the state folder, the settings it gives, the status table's role column, the refusal to start
the cluster over the single node's etcd. (tests/test_cluster.py runs the real cluster.)"""

import os

import yaml

import psutil
import pytest

from nirvana import endpoints, paths, processes, settings, shape, stack
from nirvana.stack import lifecycle, members


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    for variable in settings.SHARED:
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "state"


def test_the_kits_shape_is_the_endpoints_ports_under_the_state_folder(state):
    kit = shape.kit_shape()
    # I expect the ports of nirvana/endpoints.py, RabbitMQ's distribution on AMQP + 20000
    assert [client for client, _ in kit.etcd] == list(endpoints.CLUSTER_ETCD_PORTS) == [2379, 22379, 32379]
    assert [peer for _, peer in kit.etcd] == [2380, 22380, 32380]
    assert kit.amqp == (5673, 5674, 5675) and kit.dist == (25673, 25674, 25675)
    assert endpoints.AMQP_PORT not in kit.amqp   # 5672 stays the system RabbitMQ's
    assert kit.folder == paths.state_dir() / "cluster"
    assert kit.etcd_endpoints == "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
    assert kit.amqp_url.split(",") == [f"amqp://guest:guest@127.0.0.1:{p}/%2F" for p in (5673, 5674, 5675)]


def test_a_private_shape_takes_distinct_free_ports(tmp_path):
    one = shape.private_shape(tmp_path)
    ports = [p for pair in one.etcd for p in pair] + list(one.amqp) + list(one.dist) + [one.epmd]
    assert len(ports) == len(set(ports)) == 13
    assert not set(ports) & set(endpoints.CLUSTER_AMQP_PORTS + endpoints.CLUSTER_ETCD_PORTS + (2380, 5672))


def test_the_recorded_shape_reads_back_and_garbage_reads_as_the_single_node(state):
    # Given no record, I expect the single-node stack
    assert shape.recorded() is None
    # When a shape is recorded, I expect the same shape read back; forgotten, none
    kit = shape.private_shape(state / "x")
    shape.record(kit)
    assert shape.recorded() == kit
    shape.forget()
    assert shape.recorded() is None
    # and a file that is not a shape taken for the single-node stack, not an error
    shape.record_file().write_text('{"folder": 1}')
    assert shape.recorded() is None


def test_while_the_cluster_is_recorded_the_kits_settings_point_at_it(state, monkeypatch):
    kit = shape.kit_shape()
    shape.record(kit)
    read = settings.Settings.from_env()
    assert read.amqp_url == kit.amqp_url
    assert read.etcd_endpoint == kit.etcd_endpoints
    assert read.queue_type == "quorum"
    # a variable the user exported still wins
    monkeypatch.setenv("ETCD_ENDPOINTS", "127.0.0.1:2379")
    assert settings.Settings.from_env().etcd_endpoint == "127.0.0.1:2379"
    # and an explicit environment (a test's) is read as it is
    assert settings.Settings.from_env({}).amqp_url == f"amqp://guest:guest@127.0.0.1:{endpoints.AMQP_PORT}/%2F"
    shape.forget()
    assert settings.Settings.from_env().amqp_url == f"amqp://guest:guest@127.0.0.1:{endpoints.AMQP_PORT}/%2F"


def test_the_status_table_has_a_role_column_only_for_a_cluster():
    single = [stack.Row("etcd", "http://127.0.0.1:2379", "up", "started by kit", "state/logs/etcd.log")]
    assert stack.render_status(single).splitlines()[0].split() == ["component", "address", "state", "origin", "log"]
    cluster = single + [stack.Row("etcd-1", "http://127.0.0.1:2379", "up", "started by kit", "-", "", "leader")]
    lines = stack.render_status(cluster).splitlines()
    assert lines[0].split() == ["component", "address", "state", "role", "origin", "log"]
    assert lines[2].split()[3] == "leader" and lines[1].split()[3] == "-"


def test_up_cluster_refuses_while_the_kits_single_etcd_runs(state):
    # Given the kit's single-node etcd recorded as running (this process stands in for it)
    me = psutil.Process(os.getpid())
    processes.write_record(state / "etcd.pid", {"pid": me.pid, "started": me.create_time(), "argv": ["etcd"]})
    # When the cluster is asked for, I expect one line saying what to do, and nothing recorded
    with pytest.raises(stack.StackError, match=r"single-node stack's etcd .*`./kit down`"):
        lifecycle.up(progress=lambda _line: None, cluster=True)
    assert shape.recorded() is None


def test_the_members_in_start_order_with_their_names_and_addresses(tmp_path):
    kit = shape.private_shape(tmp_path)
    found = members.members(kit)
    assert [m.name for m in found] == ["epmd", "etcd-1", "etcd-2", "etcd-3", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert found[1].address == f"http://127.0.0.1:{kit.etcd[0][0]}"
    assert found[4].address == f"amqp://127.0.0.1:{kit.amqp[0]}"
    assert members.node_name(kit, 2) == f"nirvana_{kit.amqp[1]}@localhost"


def test_each_etcd_member_config_names_the_whole_cluster(tmp_path):
    kit = shape.private_shape(tmp_path)
    configs = [yaml.safe_load(open(members.etcd_launch(kit, i).argv[-1])) for i in (1, 2, 3)]
    assert {c["initial-cluster"] for c in configs} == {
        ",".join(f"nirvana-{i}=http://127.0.0.1:{peer}" for i, (_client, peer) in enumerate(kit.etcd, 1))}
    assert [c["listen-client-urls"] for c in configs] == [f"http://127.0.0.1:{c}" for c, _ in kit.etcd]
    assert len({c["data-dir"] for c in configs}) == 3
    # the single node's settings carried over (compaction)
    assert {c["auto-compaction-mode"] for c in configs} == {"periodic"}
