"""etcd: probed by ``GET /health``; started from Debian's etcd-server with assets/etcd's config."""

from pathlib import Path

import requests

from .. import endpoints
from .component import DOWN, Component, Launch, Probe, ports, render, tcp_open


def probe(port: int = endpoints.ETCD_PORT) -> Probe:
    """etcd on 127.0.0.1:``port``: up, down, or unhealthy naming a raised alarm (NOSPACE: out of
    space, it refuses writes) with the commands that clear it."""
    if not tcp_open(port):
        return DOWN
    url = f"http://{endpoints.HOST}:{port}"
    try:
        answer = requests.get(f"{url}/health", timeout=2)
        healthy = answer.status_code == 200 and answer.json().get("health") == "true"
    except (requests.RequestException, ValueError, AttributeError):
        healthy = False
    if healthy:
        return Probe("up")
    alarms = _alarms(url)
    if "NOSPACE" in alarms:
        return Probe("unhealthy", "alarm NOSPACE: out of space (--quota-backend-bytes), writes refused; free space "
                                  "with etcdctl compact, etcdctl defrag, etcdctl alarm disarm (README: Troubleshooting)")
    if alarms:
        return Probe("unhealthy", f"alarm {', '.join(alarms)} raised (etcdctl alarm list)")
    return Probe("unhealthy", "GET /health did not answer {\"health\":\"true\"}")


def _alarms(url: str) -> list[str]:
    """The alarms etcd has raised, by its gRPC gateway (``etcdctl alarm list`` says the same)."""
    try:
        answer = requests.post(f"{url}/v3/maintenance/alarm", json={"action": "GET"}, timeout=2)
        return sorted({alarm.get("alarm", "") for alarm in answer.json().get("alarms", [])} - {"", "NONE"})
    except (requests.RequestException, ValueError, AttributeError):
        return []


def launch(state: Path) -> Launch:
    config = render("etcd/etcd.conf.yml.in", state / "etcd.conf.yml", DATA_DIR=state / "etcd", **ports())
    return Launch(["etcd", "--config-file", str(config)])


COMPONENT = Component("etcd", f"http://{endpoints.ETCD_ENDPOINT}",
                      (endpoints.ETCD_PORT, endpoints.ETCD_PEER_PORT), probe, launch,
                      (("etcd", "apt package etcd-server"),), deadline=20)
