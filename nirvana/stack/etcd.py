"""etcd: probed by ``GET /health``; started from Debian's etcd-server with assets/etcd's config."""

from pathlib import Path

import requests

from .. import endpoints
from .component import DOWN, Component, Launch, Probe, ports, render, tcp_open


def probe() -> Probe:
    if not tcp_open(endpoints.ETCD_PORT):
        return DOWN
    try:
        answer = requests.get(f"http://{endpoints.ETCD_ENDPOINT}/health", timeout=2)
        healthy = answer.status_code == 200 and answer.json().get("health") == "true"
    except (requests.RequestException, ValueError, AttributeError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "GET /health did not answer {\"health\":\"true\"}")


def launch(state: Path) -> Launch:
    config = render("etcd/etcd.conf.yml.in", state / "etcd.conf.yml", DATA_DIR=state / "etcd", **ports())
    return Launch(["etcd", "--config-file", str(config)])


COMPONENT = Component("etcd", f"http://{endpoints.ETCD_ENDPOINT}",
                      (endpoints.ETCD_PORT, endpoints.ETCD_PEER_PORT), probe, launch,
                      (("etcd", "apt package etcd-server"),), deadline=20)
