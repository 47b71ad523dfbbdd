"""nirvana.launcher.free_ports: a port chosen now and bound seconds later by a server (a throwaway
RabbitMQ or etcd node, the browser test's JupyterLab, a private cluster) must still be free then.

A port of the kernel's ephemeral range (what bind(0) hands out) is also the source port the kernel
gives the next outgoing connection: a suite run on five workers saw a throwaway RabbitMQ node die
with ``could_not_start_listener,"127.0.0.1",55429`` (eaddrinuse) because one of its own clients
had taken that port meanwhile.
"""

import socket

import pytest

from nirvana import endpoints, launcher
from nirvana.errors import KitError


def test_free_ports_are_never_in_the_range_outgoing_connections_take_their_ports_from():
    first, last = launcher.ephemeral_range()
    ports = launcher.free_ports(200)
    # I expect 200 distinct ports, none in the ephemeral range, none of the stack's own
    assert len(set(ports)) == 200
    assert not [port for port in ports if first <= port <= last]
    assert not set(ports) & endpoints.fixed_ports()
    # and one process never handed the same port twice (a node's AMQP and distribution ports
    # asked one after the other)
    assert not set(ports) & {launcher.free_port() for _ in range(50)}


def test_a_port_handed_out_is_not_taken_by_the_clients_that_connect_meanwhile():
    # Given a free port chosen for a server that is not up yet
    port = launcher.free_port()
    # When 300 client connections are opened on the same host meanwhile (the suite's pika and
    # etcd clients do, by the thousand)
    with socket.socket() as server:
        server.bind((launcher.HOST, 0))
        server.listen(512)
        clients = [socket.create_connection(server.getsockname(), timeout=5) for _ in range(300)]
        try:
            taken = {client.getsockname()[1] for client in clients}
        finally:
            for client in clients:
                client.close()
    # I expect none of them on that port, and the server still able to bind it
    assert port not in taken
    with socket.socket() as late:
        late.bind((launcher.HOST, port))


def test_a_port_something_holds_is_never_handed_out(monkeypatch):
    # Given a pool of five ports, three of them held (bound, as a client's source port is)
    five = launcher.free_ports(5)
    monkeypatch.setattr(launcher, "port_pool", lambda _ephemeral: five)
    monkeypatch.setattr(launcher, "_handed_out", set())
    held = [socket.socket() for _ in range(3)]
    try:
        for sock, port in zip(held, five[:3], strict=True):
            sock.bind((launcher.HOST, port))
        # When two ports are asked for, I expect the two nobody holds
        assert sorted(launcher.free_ports(2)) == sorted(five[3:])
        # and once those are handed out, one line naming what is short and what to do
        with pytest.raises(KitError, match="fewer than 1 free TCP ports on 127.0.0.1 .*ip_local_port_range"):
            launcher.free_port()
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("text, expected", [
    ("32768\t60999\n", (32768, 60999)),
    ("1024 65000", (1024, 65000)),
    ("garbage", launcher.LINUX_EPHEMERAL_RANGE),
])
def test_the_ephemeral_range_is_read_from_the_kernel_and_its_default_when_unreadable(tmp_path, text, expected):
    source = tmp_path / "ip_local_port_range"
    source.write_text(text)
    assert launcher.ephemeral_range(source) == expected
    assert launcher.ephemeral_range(tmp_path / "absent") == launcher.LINUX_EPHEMERAL_RANGE


@pytest.mark.parametrize("ephemeral, pool", [
    ((32768, 60999), range(32768 - launcher.POOL_SIZE, 32768)),   # Linux's default: just below
    ((1024, 50000), range(50001, 50001 + launcher.POOL_SIZE)),    # nothing below: just above
    ((1024, 65535), range(1024, 65536)),                          # the whole range: the kernel's own
])
def test_the_pool_lies_outside_the_ephemeral_range_where_it_can(ephemeral, pool):
    assert launcher.port_pool(ephemeral) == pool
