"""The stack against its real components: up, status, the 1 s metrics path, reset, down, errors.

Tests marked ``stack`` stop or restart components; tests/conftest.py runs them last and each
leaves the whole stack up again.
"""

import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pika
import pytest
import requests
import statsd
from conftest import native_only
from whisper_files import nonzero_points, seconds_per_point

from nirvana import endpoints, paths, stack
from nirvana.stack import statsd as stack_statsd
from nirvana.testing import graphite_total

NAMES = [component.name for component in stack.COMPONENTS]
VISIBLE_WITHIN = 5.0   # seconds for a counter to reach the render API (measured ~1.5 s: bench/)


def quiet(_line: str) -> None:
    pass


@pytest.fixture
def running() -> list[stack.Row]:
    """The whole stack up (started now if it is not); every test here needs it."""
    rows = stack.up(progress=quiet)
    assert [row.name for row in rows if not row.healthy] == []
    return rows


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nirvana", *args], cwd=paths.ROOT,
                          capture_output=True, text=True, timeout=60)


def kit_pids() -> dict[str, int]:
    pids = {}
    for name in NAMES:
        process = stack.kit_process(name)
        if process is not None:
            pids[name] = process.pid
    return pids


def test_the_kits_etcd_keeps_a_bounded_raft_log_in_memory(running):
    # Given the stack's etcd up, I expect it started with a snapshot every 10,000 raft entries, as
    # its own start line says (etcd 3.4's default of 100,000 window transactions held GBs)
    native_only("etcd")   # its log is the kit's file only when the kit started it
    started = re.findall(r'"snapshot-count":(\d+)', (paths.log_dir() / "etcd.log").read_text())
    assert started and started[-1] == "10000"


def test_second_up_is_a_no_op(running):
    # Given a running stack
    before = kit_pids()
    lines: list[str] = []
    # When up runs again
    rows = stack.up(progress=lines.append)
    # I expect nothing started or restarted, every component reported as up
    assert kit_pids() == before
    assert all(row.healthy for row in rows)
    assert [line for line in lines if "starting" in line] == []
    assert len(lines) == len(NAMES) and all(" up, " in line for line in lines)


def test_status_names_every_component_and_the_cli_exits_zero(running):
    # Given a running stack, when status is asked in code and on the command line
    rows = stack.status()
    table = stack.render_status(rows)
    cli = run_cli("status")
    # I expect one row per component, each with its address and where it came from
    assert [row.name for row in rows] == NAMES
    assert table.splitlines()[0].split() == ["component", "address", "state", "origin", "log"]
    for row in rows:
        assert row.origin in ("started by kit", "found running")
        assert row.log or row.origin == "found running"
    assert cli.returncode == 0, cli.stderr
    # and the CLI to list JupyterLab below the stack (its address, up or down; not counted in the
    # exit status), then the RabbitMQ node its rabbitmqctl calls address, then the log (events.log)
    *lines, node_line, log_line = cli.stdout.strip().splitlines()
    assert log_line.startswith("log ") and ".log" in log_line, log_line
    lab = stack.status(["jupyterlab"])
    assert "\n".join(lines) == stack.render_status(rows + lab)
    assert lines[-1].split()[:3] == ["jupyterlab", f"http://{endpoints.HOST}:{stack.LAB_PORT}/lab", lab[0].state]
    node = stack.rabbitmq_node()
    assert node_line == node.describe()
    assert (node.name in node_line) if node.started_by_kit else ("found running" in node_line)


def test_an_unknown_component_is_a_usage_error():
    cli = run_cli("down", "nonsense")
    assert cli.returncode == 2
    assert "unknown component nonsense: choose from rabbitmq, etcd" in cli.stderr


def render_total(target: str) -> float:
    return graphite_total(endpoints.GRAPHITE_URL, target)


def wait_total(target: str, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        total = render_total(target)
        if total >= at_least or time.monotonic() >= deadline:
            return total
        time.sleep(0.1)


def test_statsd_counter_is_readable_from_the_render_api_within_seconds(running):
    # Given a counter name nobody has used
    name = f"nirvana_test_{uuid.uuid4().hex[:12]}"
    # When it is incremented by 3 through statsd on 127.0.0.1:8125
    statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT).incr(name, 3)
    sent = time.monotonic()
    total = wait_total(f"stats_counts.{name}", 3, VISIBLE_WITHIN)
    # I expect graphite-web to answer exactly 3 within the deadline
    assert total == 3, f"stats_counts.{name} summed to {total} after {time.monotonic() - sent:.1f} s"


@pytest.mark.stack
def test_reset_leaves_no_kit_messages_etcd_keys_or_whisper_files(running):
    native_only("carbon")
    from svc import topology
    from svc.stream import log_start

    exchange = topology.DEFAULT_EXCHANGE
    params = pika.URLParameters(endpoints.AMQP_URL)
    # Given messages waiting in the kit's queues, keys under the kit's etcd prefix, whisper files
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        topology.declare(channel, exchange=exchange)
        channel.confirm_delivery()
        for number in range(3):
            channel.basic_publish(exchange, "reset-test", f'{{"type":"new_order","id":"r{number}"}}'.encode())
        channel.basic_publish(topology.dead_letter_exchange(exchange), "", b"{}")
        # and a queue that only looks like the kit's: another application's, bound to the exchange
        stranger = f"{exchange}.not-the-kits-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(stranger)
        channel.queue_bind(stranger, exchange, "#")
        channel.basic_publish(exchange, "reset-test", b'{"type":"new_order","id":"s"}')
    prefix = stack.etcd_prefix()
    outside = "/nirvana-reset-test-outside"   # shares the prefix's letters, not its folder
    etcd = stack.etcd_client()
    for key in (f"{prefix}/dedup/reset-test/a", f"{prefix}/effects/reset-test/a", outside):
        etcd.put(key, "x")
    name = f"nirvana_test_{uuid.uuid4().hex[:12]}"
    statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT).incr(name)
    assert wait_total(f"stats_counts.{name}", 1, VISIBLE_WITHIN) == 1
    counter_file = stack.whisper_dir() / "stats_counts" / f"{name}.wsp"
    assert seconds_per_point(counter_file) == 1  # the 1 s retention of assets/carbon
    # When the stack is reset
    stack.reset(progress=quiet)
    # I expect the kit's queues empty, its etcd keys gone, no whisper file — and nothing else touched
    talk_queues = [topology.queue_name(s, exchange) for s in topology.DEFAULT_SERVICES]
    talk_queues.append(topology.dead_letter_queue(exchange))
    assert set(talk_queues) <= set(stack.kit_queues(exchange))
    with pika.BlockingConnection(params) as connection:
        depths = {queue: connection.channel().queue_declare(queue, passive=True).method.message_count
                  for queue in talk_queues}
        stranger_depth = connection.channel().queue_declare(stranger, passive=True).method.message_count
        connection.channel().queue_delete(stranger)
    assert depths == dict.fromkeys(talk_queues, 0)
    assert stranger_depth == 1
    # the log held the 4 events: a stream is emptied by deleting it (its message count lags: its first offset says)
    assert log_start(endpoints.AMQP_URL, exchange) is None
    assert stack.count_etcd_prefix() == 0
    assert etcd.get(outside) == b"x"
    etcd.delete_prefix(outside)
    etcd.close()
    # statsd sends a 0 each second for every counter it has seen (and its own health metrics), so
    # files come back at once: what must be gone is the data, every point counted before the reset.
    kept = {str(path.relative_to(stack.whisper_dir())): nonzero_points(path) for path in stack.whisper_files()
            if path.relative_to(stack.whisper_dir()).parts[0] not in ("carbon",)
            and "statsd" not in path.relative_to(stack.whisper_dir()).parts}
    assert {path: points for path, points in kept.items() if points} == {}


@pytest.mark.stack
def test_down_stops_what_the_kit_started_and_up_brings_all_back(running):
    # Given a running stack, part of it found running (RabbitMQ on this machine and in CI)
    origin = {row.name: row.origin for row in running}
    ours = sorted(name for name, how in origin.items() if how == "started by kit")
    found = sorted(name for name, how in origin.items() if how == "found running")
    # When the kit's stack goes down
    stopped = stack.down(progress=quiet, only=NAMES)
    after = {row.name: row for row in stack.status()}
    # I expect exactly the kit's components stopped and not answering, the others untouched
    assert sorted(stopped) == ours
    assert all(after[name].state == "down" for name in ours), after
    assert all(after[name].healthy for name in found), after
    # And when up runs from nothing, every component is healthy again
    lines: list[str] = []
    rows = stack.up(progress=lines.append)
    assert [row.name for row in rows if not row.healthy] == []
    assert sorted(row.name for row in rows if row.origin == "started by kit") == ours
    assert sum("starting" in line for line in lines) == len(ours)


@pytest.mark.slow
@pytest.mark.stack
def test_a_held_port_or_a_missing_program_gives_a_one_line_error(running, monkeypatch):
    native_only("statsd")
    # Given statsd stopped, and its admin port taken by this test's own listening socket
    stack.down(progress=quiet, only=["statsd"])
    cli = run_cli("status")
    assert cli.returncode == 1 and re.search(r"^statsd +\S+ +\(admin \d+\) +down ", cli.stdout, re.M), cli.stdout
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind((endpoints.HOST, endpoints.STATSD_ADMIN_PORT))
        holder.listen()
        # When up runs
        with pytest.raises(stack.StackError) as held:
            stack.up(progress=quiet)
        # I expect one line naming the port and this program, and status calling it unhealthy
        message = str(held.value)
        assert "\n" not in message
        assert f"port {endpoints.STATSD_ADMIN_PORT}/tcp" in message
        assert f"pid {os.getpid()}" in message
        row = stack.status(["statsd"])[0]
        assert (row.state, row.origin) == ("unhealthy", "found running")
        assert f"pid {os.getpid()}" in row.detail
    finally:
        holder.close()
    # Given the port free but Node.js not on the PATH
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(stack.StackError) as missing:
        stack.up(progress=quiet, only=["statsd"])
    # I expect one line naming what is missing and the set-up command
    assert "\n" not in str(missing.value)
    assert "node is missing" in str(missing.value) and "./kit setup" in str(missing.value)
    monkeypatch.undo()
    # And with the PATH back, up brings statsd back
    assert all(row.healthy for row in stack.up(progress=quiet))


@pytest.mark.stack
def test_a_component_that_dies_on_start_names_its_log(running, monkeypatch, tmp_path):
    native_only("etcd")
    # Given etcd stopped and an etcd whose data folder cannot be created (a file stands in its way)
    stack.down(progress=quiet, only=["etcd"])
    state = tmp_path / "state"
    state.mkdir()
    (state / "etcd").write_text("not a folder")
    monkeypatch.setenv("NIRVANA_STATE", str(state))
    try:
        # When up starts it
        with pytest.raises(stack.StackError) as died:
            stack.up(progress=quiet, only=["etcd"])
        # I expect one line: it died, where its log is, and the log's last words
        message = str(died.value)
        assert "\n" not in message
        assert message.startswith("etcd died on start; its log ")
        assert str(state / "logs" / "etcd.log") in message
    finally:
        monkeypatch.undo()
        assert all(row.healthy for row in stack.up(progress=quiet))


@pytest.mark.stack
def test_present_leaves_jupyterlab_answering_on_its_url():
    # Given JupyterLab running (started here unless a presenter already has it open)
    already = stack.status(["jupyterlab"])[0].healthy
    url = stack.lab(open_browser=False, progress=quiet)
    try:
        # I expect its URL, token included, to open the lab, and the API to refuse a caller without it
        assert url.startswith(f"http://{endpoints.HOST}:{stack.LAB_PORT}/lab?token=")
        assert requests.get(url, timeout=10).status_code == 200
        assert requests.get(f"http://{endpoints.HOST}:{stack.LAB_PORT}/api/contents", timeout=10).status_code == 403
        # and a second call to give the same URL without starting another
        assert stack.lab(open_browser=False, progress=quiet) == url
        # and `./kit status` to list it, up
        row = next(line for line in run_cli("status").stdout.splitlines() if line.startswith("jupyterlab"))
        assert row.split()[1:3] == [f"http://{endpoints.HOST}:{stack.LAB_PORT}/lab", "up"], row
    finally:
        if not already:
            assert stack.down(progress=quiet, only=["jupyterlab"]) == ["jupyterlab"]


@pytest.mark.parametrize("prefix", ["/", "//", "nirvana", "/a b"])
def test_reset_refuses_an_etcd_prefix_that_is_not_one_absolute_prefix(prefix, monkeypatch, use_settings):
    # Given ETCD_PREFIX=/ (every key in etcd) or another bad value, I expect the kit to refuse it
    # (reset stops before touching anything) with one line naming the variable, and the CLI to exit 2.
    monkeypatch.setenv("ETCD_PREFIX", prefix)
    use_settings(None)   # as a kernel started now reads it
    with pytest.raises(stack.SettingError, match="ETCD_PREFIX"):
        stack.reset(progress=quiet)
    result = run_cli("reset")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "ETCD_PREFIX" in result.stderr


# A port proxy's answer before the service inside listens: accept, never answer, for HOLD seconds;
# then the real statsd (the kit's own program and config) takes over in the same process.
LATE_STATSD = """
import os, socket, sys, time
hold, port, argv = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.monotonic() + 30
while True:   # the kit's statsd, just stopped, may hold the port a moment longer
    try:
        sock.bind(("127.0.0.1", port))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
sock.listen(16)
print("bound", flush=True)
time.sleep(hold)
sock.close()
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)   # statsd's own output: nobody reads the pipe
os.execvp(argv[0], argv)
"""


@pytest.mark.stack
def test_up_waits_for_a_component_found_running_that_becomes_healthy_late():
    assert stack.up(progress=quiet, only=["statsd"])[0].healthy
    native_only("statsd")
    # Given statsd found on its port (not the kit's), answering but not healthy for its first 4 s,
    # as a docker-compose container behind docker's port proxy right after `docker compose up -d`
    stack.down(progress=quiet, only=["statsd"])
    argv = stack_statsd.launch(paths.state_dir()).argv
    late = subprocess.Popen([sys.executable, "-c", LATE_STATSD, "5", str(endpoints.STATSD_ADMIN_PORT), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        # (the listener says when it is bound: on a loaded machine Python's start alone can take
        # seconds, so a fixed wait for "unhealthy" raced it)
        assert late.stdout.readline().strip() == "bound"
        assert stack.status(["statsd"])[0].state == "unhealthy"
        # When up runs
        lines: list[str] = []
        [row] = stack.up(progress=lines.append, only=["statsd"])
        # I expect it to wait within statsd's deadline and find it healthy, not to stop at "held by"
        assert (row.state, row.origin) == ("up", "found running"), row
        assert any("found, not healthy yet: waiting up to" in line for line in lines), lines
        assert stack.kit_process("statsd") is None
    finally:
        os.killpg(late.pid, 9)
        late.wait(10)
        assert stack.up(progress=quiet, only=["statsd"])[0].healthy


def test_reset_names_each_service_it_stopped(running, kit):
    # Given a service running (started by the kit), when `./kit reset` runs
    from nirvana import services

    name = kit["names"]["a"]
    services.start(name, env=kit["env"], progress=quiet)
    cli = run_cli("reset")
    # I expect it to say that it stopped that service, and a second reset that none was running
    assert cli.returncode == 0, cli.stderr
    assert f"svc           {name}: stopped" in cli.stdout.splitlines(), cli.stdout
    assert "svc           no service was running" in run_cli("reset").stdout.splitlines()
