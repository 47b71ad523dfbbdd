"""The kit's own RabbitMQ node (a new machine, where no RabbitMQ runs) and how its tools reach it.

A throwaway node of the kit's is started here on free ports with its own state folder, the way
`./kit up` starts one where nothing answers on 5672; the system's RabbitMQ keeps running beside it
and is never touched. Every rabbitmqctl call must reach the throwaway node, not the system's.
"""

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pika
import psutil
import pytest
from conftest import need

from nirvana import endpoints, launcher, paths, processes, stack
from nirvana.stack import rabbitmq, running
from nirvana.testing import World, wait_for
from nirvana.launcher import free_port

START_TIMEOUT = 60.0   # seconds: the stack's own deadline for RabbitMQ


def _amqp_url(port: int) -> str:
    return f"amqp://guest:guest@{endpoints.HOST}:{port}/%2F"


def _answers(port: int) -> bool:
    params = pika.URLParameters(_amqp_url(port))
    params.connection_attempts, params.socket_timeout = 1, 2
    try:
        pika.BlockingConnection(params).close()
        return True
    except pika.exceptions.AMQPError:
        return False


def _wait_answering(process, port: int) -> None:
    """Until the node started as ``process`` answers AMQP on ``port``; a node that exits meanwhile
    fails the test at once with its log's last lines (not at the 60 s deadline)."""
    try:
        launcher.wait_ready(lambda: _answers(port), bool, waiting=[process], timeout=START_TIMEOUT, interval=0.5,
                            what=f"the kit's throwaway RabbitMQ on port {port}")
    except launcher.Exited as exited:
        pytest.fail(f"{exited}; its log ends: {running.tail(running.log_file('rabbitmq'), 5)}")


@pytest.fixture(scope="module")
def kit_node(tmp_path_factory):
    """A node the kit started (its pid file under a state folder of its own) on a free AMQP port;
    stopped, with its epmd, at the end. Yields (node, amqp port)."""
    need("RabbitMQ's server (apt package rabbitmq-server)", rabbitmq.SERVER.exists())
    need("epmd (apt package erlang-base)", shutil.which("epmd") is not None)
    state = tmp_path_factory.mktemp("state")
    port = free_port()
    user_cookie = Path.home() / ".erlang.cookie"
    had_cookie = user_cookie.exists()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIRVANA_STATE", str(state))
        paths.log_dir().mkdir(parents=True)
        argv, env = rabbitmq.server_launch(state, port, dist_port=free_port())
        process = running.start(rabbitmq.COMPONENT, stack.Launch(argv, env))
        try:
            _wait_answering(process, port)
            # the kit's node keeps its cookie in the state folder, never in the user's HOME
            assert user_cookie.exists() == had_cookie
            yield rabbitmq.node(port), port
        finally:
            running.stop("rabbitmq", process)


def test_the_kits_node_is_named_and_keeps_its_cookie_in_the_state_folder(kit_node):
    node, port = kit_node
    # Given the kit's node running, I expect it named as the kit names it, its cookie, data and
    # log under the state folder, and the user's own ~/.erlang.cookie never needed
    assert node.started_by_kit and node.name == f"nirvana_{port}@localhost"
    assert node.home == paths.state_dir() / "rabbitmq"
    assert (node.home / ".erlang.cookie").is_file()
    assert (node.home / "mnesia").is_dir()
    line = node.describe()
    assert node.name in line and ".erlang.cookie" in line and "mnesia" in line
    # and its tools to address it: it answers with its own name
    answer = subprocess.run([*node.ctl(), "-q", "eval", "node()."], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == node.name


def test_rabbitmqctl_lists_the_connections_of_the_node_on_the_kits_port(kit_node):
    node, port = kit_node
    # Given a client connected to the kit's node under a name of its own
    name = f"nirvana-test-{uuid.uuid4().hex[:8]}"
    params = pika.URLParameters(_amqp_url(port))
    params.client_properties = {"connection_name": name}
    with pika.BlockingConnection(params):
        # When the node's connections are listed
        listed = subprocess.run([*node.ctl(), "-q", "list_connections", "client_properties"],
                                capture_output=True, text=True, timeout=60)
    # I expect that client among them: the node answering on the port is the one addressed
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout


def test_a_world_closes_its_service_connections_on_the_kits_node(kit_node, etcd_endpoint, tmp_path):
    node, port = kit_node
    # Given a service consuming from the kit's node (the system's RabbitMQ answers on 5672 beside it)
    world = World(_amqp_url(port), etcd_endpoint, tmp_path, rabbitmqctl=node.ctl())
    try:
        orders = world.service_name("orders")
        [process] = world.start(orders)
        # When the test closes its connections as an operator would
        closed = world.close_connections(process)
        # I expect them found and closed on that node, and the service back as a consumer
        assert closed >= 1
        wait_for(lambda: "reconnecting" in process.log(), "the service to notice the closed connection")
        world.wait_consumers(orders, 1, [process])
    finally:
        world.close()


def _epmds() -> set[int]:
    """The epmd processes of this network namespace (another namespace's are another machine's)."""
    mine = os.readlink("/proc/self/ns/net")
    found = set()
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] == "epmd" and os.readlink(f"/proc/{process.pid}/ns/net") == mine:
                found.add(process.pid)
        except OSError:
            continue
    return found


def test_the_kits_node_leaves_no_process_behind_when_stopped(tmp_path, monkeypatch):
    need("RabbitMQ's server (apt package rabbitmq-server)", rabbitmq.SERVER.exists())
    # Given a kit node started and stopped as `./kit up` / `./kit down` do
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path))
    paths.log_dir().mkdir(parents=True)
    epmds_before = _epmds()
    port = free_port()
    argv, env = rabbitmq.server_launch(tmp_path, port, dist_port=free_port())
    process = running.start(rabbitmq.COMPONENT, stack.Launch(argv, env))
    group = process.pid
    try:
        _wait_answering(process, port)
    finally:
        running.stop("rabbitmq", process)
    # I expect nothing of its process group left, and no epmd the node started (an `epmd -daemon`
    # leaves the group): where no epmd ran before, as on a new machine, none runs after
    deadline = time.monotonic() + 5
    while (left := [p.pid for p in processes.group_members(group)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
    assert _epmds() <= epmds_before
