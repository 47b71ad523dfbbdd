"""No svc outlives the kernel that started it by more than a second, even a busy one (issue 9).

A real IPython kernel (jupyter_client, the way JupyterLab runs one) starts a service whose every
event takes 10 s (WORK_MS=10000), in an isolated svc world; the service is busy with an event when
the kernel is shut down (Jupyter asks, then kills it after its grace period) or killed outright.
"""

import json
import time

import psutil
import pytest
from jupyter_client import KernelManager

BUSY_MS = 10_000
GRACE = 1.0     # seconds a service may outlive its kernel


def run(client, code: str) -> str:
    lines = []

    def collect(message):
        if message["msg_type"] == "stream":
            lines.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            lines.append("\n".join(message["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=60, output_hook=collect)
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


@pytest.mark.parametrize("end", ["shutdown", "kill", "restart"])
def test_a_busy_service_dies_with_its_kernel(svc_world, tmp_path, end):
    # Given a kernel that started a service, busy with a 10 s event
    name = svc_world.service_name()
    env = {"EVENTS_EXCHANGE": svc_world.exchange, "ETCD_PREFIX": svc_world.prefix, "WORK_MS": str(BUSY_MS)}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env={**__import__("os").environ, "NIRVANA_STATE": str(tmp_path / "state")})
    client = manager.client()
    client.start_channels()
    pid = None
    try:
        client.wait_for_ready(timeout=60)
        pid = int(run(client, f"from nirvana import services\n"
                              f"s = services.start({name!r}, env={json.dumps(env)}, progress=lambda _l: None)\n"
                              f"print(s.pid)").strip())
        svc_world.publish(name, {"type": "new_order", "id": "busy"})
        deadline = time.monotonic() + 10
        while svc_world.depth(name) and time.monotonic() < deadline:   # delivered: the service works on it
            time.sleep(0.05)
        assert svc_world.depth(name) == 0
        kernel = manager.provisioner.pid
        # When the kernel ends
        if end == "shutdown":
            manager.shutdown_kernel(now=False)     # asks, then kills after Jupyter's grace period
        elif end == "kill":
            manager.shutdown_kernel(now=True)
        else:
            manager.restart_kernel(now=False)
        assert gone_within(kernel, 15) is not None, "the kernel did not end"
        # I expect the service gone within a second of its kernel
        assert gone_within(pid, GRACE) is not None, f"svc {pid} outlived its kernel by more than {GRACE} s"
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)
        if pid and psutil.pid_exists(pid):
            psutil.Process(pid).kill()
