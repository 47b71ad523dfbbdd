"""nirvana.cuts: an svc replica's broker connection closed with rabbitmqctl, against the real
RabbitMQ and svc processes, in a state folder and exchange of the test's own.

Found at heavy load in the chaos run: the cut hit the replica a crash point had just restarted,
before its connection was open, and reported "(0 closed)".
"""

import signal
import threading

import psutil
import pytest
from conftest import need_rabbitmqctl

from nirvana import cuts, endpoints, rabbit, services, stack
from nirvana._wait import poll, quiet


@pytest.fixture
def node(kit_env, tmp_path, monkeypatch):
    """The kit's RabbitMQ node (found before the state folder moves to the test's own)."""
    need_rabbitmqctl("to list the connections the test cuts")
    found = stack.rabbitmq_node()
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    yield found
    services.stop_all(timeout=5)


def test_a_replica_whose_connection_opens_late_is_cut_once_it_is_open(node, kit_env, own_etcd):
    # Given orders just started with dedup on an etcd frozen for 4 s (SIGSTOP: it accepts, never
    # answers): svc opens its broker connection only once it has imported its done ids
    own_etcd.signal(signal.SIGSTOP)
    thaw = threading.Timer(4.0, own_etcd.signal, (signal.SIGCONT,))
    thaw.start()
    try:
        services.start("orders", dedup=True, wait=False, progress=quiet,
                       env={"ETCD_ENDPOINTS": own_etcd.endpoint, "ETCD_TIMEOUT": "0.5"})
        # When its connection is cut at once
        closed, instance = cuts.cut_replica("orders", exchange=kit_env["exchange"], replicas=1, node=node)
    finally:
        thaw.join()
    # I expect the cut to wait for it and close its one connection, and orders to consume again
    assert (closed, instance) == (1, 1)
    poll(lambda: rabbit.consumers("orders"), lambda n: n == 1, what="orders consuming again", timeout=30,
         progress=quiet)
    [pid] = [s.pid for s in services.instances("orders")]
    assert list(cuts.open_connections("orders", node)) == [pid]


def test_no_replica_to_cut_is_one_line_after_the_deadline(node, kit_env):
    # Given no replica of notify running, when a cut is asked with a 1 s deadline
    with pytest.raises(TimeoutError, match=r"^gave up after 1 s waiting for a replica of notify with a broker "
                                           r"connection open: 0 running, none listed by rabbitmqctl$"):
        cuts.cut_replica("notify", exchange=kit_env["exchange"], replicas=1, node=node, timeout=1)


class RefusingNode:
    """A node whose rabbitmqctl refuses this user, as Debian's does for a normal user."""

    def __init__(self, folder):
        self.program = folder / "rabbitmqctl"
        self.program.write_text("#!/bin/sh\necho 'Only root or rabbitmq should run rabbitmqctl' >&2\nexit 1\n")
        self.program.chmod(0o755)

    def ctl(self, tool: str = "rabbitmqctl") -> list[str]:
        return [str(self.program)]


@pytest.fixture
def own_state(kit_env, tmp_path, monkeypatch):
    """A state folder of the test's own (no rabbitmqctl needed: the cut is the user's own)."""
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    yield
    services.stop_all(timeout=5)


def broker_ports(pid: int) -> set[int]:
    """The local ports of process ``pid``'s TCP connections to the kit's broker."""
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
            if c.raddr and c.raddr.port == endpoints.AMQP_PORT}


def test_a_user_refused_by_rabbitmqctl_cuts_the_replicas_tcp_connection(own_state, kit_env, tmp_path):
    # Given orders running, and a user whose rabbitmqctl refuses to run (a normal user beside the
    # system's RabbitMQ)
    services.start("orders", dedup=False, progress=quiet)
    [pid] = [s.pid for s in services.instances("orders")]
    before = broker_ports(pid)
    # When the chapter cuts its connection
    closed, instance = cuts.cut_replica("orders", exchange=kit_env["exchange"], replicas=1, node=RefusingNode(tmp_path))
    # I expect its broker connection closed without rabbitmqctl (the process connects again on a
    # connection of its own), and orders consuming again
    assert (closed, instance) == (1, 1)
    poll(lambda: broker_ports(pid), lambda now: now and not now & before,
         what="orders connected again on a new connection", timeout=30, progress=quiet)
    poll(lambda: rabbit.consumers("orders"), lambda n: n == 1, what="orders consuming again", timeout=30,
         progress=quiet)
    # and cut_connection too
    assert cuts.cut_connection("orders", pid, RefusingNode(tmp_path)) == 1
