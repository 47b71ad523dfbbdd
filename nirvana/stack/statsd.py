"""statsd (Etsy's, from npm): probed on its admin port; run with the machine's Node.js."""

import socket
from pathlib import Path

from .. import endpoints, paths
from .component import DOWN, HOST, PROBE_TIMEOUT, Component, Launch, Probe

STATSD_VERSION = "0.9.0"   # the one ./kit setup installs into .tools/


def main_script() -> Path:
    return paths.ROOT / ".tools" / "statsd" / "node_modules" / "statsd" / "stats.js"


def probe() -> Probe:
    try:
        with socket.create_connection((HOST, endpoints.STATSD_ADMIN_PORT), timeout=PROBE_TIMEOUT) as conn:
            conn.settimeout(1)
            conn.sendall(b"health\n")
            answer = conn.recv(64)
    except ConnectionRefusedError:
        return DOWN
    except OSError:
        answer = b""
    if answer.startswith(b"health: up"):
        return Probe("up")
    return Probe("unhealthy", "admin port did not answer `health: up`")


def launch(state: Path) -> Launch:
    return Launch(["node", str(main_script()), str(paths.ASSETS / "statsd" / "config.js")])


COMPONENT = Component("statsd", f"udp://{HOST}:{endpoints.STATSD_PORT} (admin {endpoints.STATSD_ADMIN_PORT})",
                      (endpoints.STATSD_ADMIN_PORT,), probe, launch,
                      (("node", "Node.js (apt package nodejs)"),
                       (str(main_script()), f"npm statsd@{STATSD_VERSION} in .tools/")),
                      deadline=15, udp_ports=(endpoints.STATSD_PORT,))
