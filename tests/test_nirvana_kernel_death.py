"""Nothing a notebook kernel starts outlives it: its services, its throwaway etcd, its cluster.

A real IPython kernel (jupyter_client, the way JupyterLab runs one) starts
- a service whose every event takes 10 s (WORK_MS=10000), in an isolated svc world; the service is
  busy with an event when the kernel is shut down (Jupyter asks, then kills it after its grace
  period) or killed outright: it is gone within a second (issue 9);
- a throwaway etcd (chapters 05 and 07) or a private cluster (chapter 09: three etcd members,
  three RabbitMQ nodes, their epmd) and is SIGKILLed or restarted as a hung kernel is: no atexit
  runs, yet the members end, their ports are free and their folder is gone (issue 12); the
  cluster test is marked ``stack`` and runs in a network namespace of its own.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
from conftest import RUN_TIMEOUT, in_own_namespace, need
from jupyter_client import KernelManager

from nirvana.launcher import tcp_open as answering

BUSY_MS = 10_000
GRACE = 1.0     # seconds a service may outlive its kernel
ETCD_GONE_WITHIN = 15.0      # seconds: the watchdog's SIGTERM, etcd's exit, the folder removed
CLUSTER_GONE_WITHIN = 30.0   # seconds: SIGTERM, SIGKILL after the cluster's 15 s, the folder removed
CLUSTER_UP_TIMEOUT = 240.0   # seconds for a kernel to bring a cluster up (RabbitMQ's start)


def run(client, code: str, timeout: float = 60) -> str:
    lines = []

    def collect(message):
        if message["msg_type"] == "stream":
            lines.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            lines.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
    assert reply["content"]["status"] == "ok", "".join(lines)
    return "".join(lines)


def gone_within(pid: int, seconds: float) -> float | None:
    """Seconds until ``pid`` is gone (a zombie counts as gone), or None after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - started
        except psutil.NoSuchProcess:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


@contextlib.contextmanager
def kernel(tmp_path):
    """A real IPython kernel with a state folder of the test's; (its manager, a client). Shut down
    at the end if it still runs."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env={**os.environ, "NIRVANA_STATE": str(tmp_path / "state")})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield manager, client
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)


def end_kernel(manager: KernelManager, end: str) -> None:
    """End the kernel: ``shutdown`` (Jupyter asks, then kills after its grace period), ``kill``
    (Jupyter kills it), ``restart`` (Jupyter's restart), ``sigkill`` (a crash: SIGKILL from outside),
    ``hung restart`` (Jupyter's restart of a kernel that does not answer: it is killed)."""
    pid = manager.provisioner.pid
    if end == "shutdown":
        manager.shutdown_kernel(now=False)
    elif end == "kill":
        manager.shutdown_kernel(now=True)
    elif end == "restart":
        manager.restart_kernel(now=False)
    elif end == "hung restart":
        manager.restart_kernel(now=True)
    else:
        os.kill(pid, signal.SIGKILL)
    assert gone_within(pid, 15) is not None, "the kernel did not end"


def port_free(port: int) -> bool:
    """Nothing answers on 127.0.0.1:``port`` and a server could listen there (SO_REUSEADDR, as servers bind)."""
    if answering(port):
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def watchdogs(kernel_pid: int) -> list[int]:
    """The kernel's watchdog processes (nirvana/watchdog.py), by pid."""
    return [child.pid for child in psutil.Process(kernel_pid).children()
            if any(part.endswith("nirvana/watchdog.py") for part in child.cmdline())]


def all_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait up to ``seconds`` for every pid to end; those still running."""
    deadline = time.monotonic() + seconds
    return [pid for pid in pids if gone_within(pid, max(0.05, deadline - time.monotonic())) is None]


@pytest.mark.parametrize("end", ["shutdown", "kill", "restart"])
def test_a_busy_service_dies_with_its_kernel(svc_world, tmp_path, end):
    # Given a kernel that started a service, busy with a 10 s event
    name = svc_world.service_name()
    env = {"EVENTS_EXCHANGE": svc_world.exchange, "ETCD_PREFIX": svc_world.prefix, "WORK_MS": str(BUSY_MS)}
    with kernel(tmp_path) as (manager, client):
        pid = int(run(client, f"from nirvana import services\n"
                              f"s = services.start({name!r}, env={json.dumps(env)}, progress=lambda _l: None)\n"
                              f"print(s.pid)").strip())
        svc_world.publish(name, {"type": "new_order", "id": "busy"})
        deadline = time.monotonic() + 10
        while svc_world.depth(name) and time.monotonic() < deadline:   # delivered: the service works on it
            time.sleep(0.05)
        assert svc_world.depth(name) == 0
        # When the kernel ends
        end_kernel(manager, end)
        # I expect the service gone within a second of its kernel
        try:
            assert gone_within(pid, GRACE) is not None, f"svc {pid} outlived its kernel by more than {GRACE} s"
        finally:
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


@pytest.mark.parametrize("end", ["sigkill", "hung restart"])
def test_a_throwaway_etcd_ends_with_its_kernel_and_leaves_no_folder(tmp_path, end):
    need("etcd (on PATH, to run a throwaway one)", bool(shutil.which("etcd")))
    with kernel(tmp_path) as (manager, client):
        # Given a kernel that started a throwaway etcd, as chapters 05 and 07 do
        facts = json.loads(run(client, "import json\nfrom nirvana import OwnEtcd\n"
                                       "etcd = OwnEtcd(progress=lambda _l: None).start()\n"
                                       "print(json.dumps({'pid': etcd.process.pid, 'ports': [etcd.client, etcd.peer], "
                                       "'folder': str(etcd.data_dir)}))"))
        guards = watchdogs(manager.provisioner.pid)
        try:
            # When the kernel dies without running its atexit hooks
            end_kernel(manager, end)
            # I expect etcd and its watchdog gone, its ports free and its folder removed, within the deadline
            assert all_gone([facts["pid"], *guards], ETCD_GONE_WITHIN) == []
            assert all(port_free(port) for port in facts["ports"])
            assert not Path(facts["folder"]).exists()
        finally:
            for pid in [facts["pid"], *guards]:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            shutil.rmtree(facts["folder"], ignore_errors=True)


CLUSTER_UP = """
import json
from nirvana import scale
cluster = scale.Cluster(progress=lambda _l: None).up()
shape = cluster.shape
ports = [port for pair in shape.etcd for port in pair] + [*shape.amqp, *shape.dist, shape.epmd]
print(json.dumps({'folder': str(cluster.folder), 'ports': ports}))
"""


def member_processes(folder: Path) -> list[int]:
    """Every live process of the groups recorded in a cluster's folder (``<member>.pid``): the
    members and what they started (beam.smp, epmd)."""
    groups = {json.loads(path.read_text())["pid"] for path in folder.glob("*.pid")}
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
    return found


@pytest.mark.stack   # last: ~40 s of RabbitMQ starting (tests/conftest.py)
@pytest.mark.cluster
@pytest.mark.timeout(RUN_TIMEOUT + 90)
@pytest.mark.parametrize("end", ["sigkill", "close"])
def test_a_private_cluster_ends_with_its_kernel_or_its_close(request, tmp_path, end):
    if not in_own_namespace(request, tmp_path):
        return
    with kernel(tmp_path) as (manager, client):
        # Given a kernel that brought up a cluster of its own, as chapter 09 does
        facts = json.loads(run(client, CLUSTER_UP, timeout=CLUSTER_UP_TIMEOUT))
        folder = Path(facts["folder"])
        started = member_processes(folder)
        guards = watchdogs(manager.provisioner.pid)
        try:
            assert len(started) >= 7, started   # 3 etcd, 3 shells and their beam.smp, epmd
            # When the kernel is SIGKILLed (no atexit runs), or the chapter closes the cluster
            if end == "sigkill":
                end_kernel(manager, end)
            else:
                run(client, "cluster.close()", timeout=CLUSTER_UP_TIMEOUT)
            # I expect every member, what it started and the watchdog gone, every port free, no folder
            assert all_gone([*started, *guards], CLUSTER_GONE_WITHIN) == []
            assert [port for port in facts["ports"] if not port_free(port)] == []
            assert not folder.exists()
        finally:
            for pid in [*started, *guards]:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            shutil.rmtree(folder, ignore_errors=True)
