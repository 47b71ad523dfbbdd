"""carbon-cache: probed with a carbonlink cache query; started from Debian's graphite-carbon."""

import io
import pickle
import socket
import struct
from pathlib import Path

from .. import endpoints, paths
from .component import DOWN, HOST, PROBE_TIMEOUT, Component, Launch, Probe, ports, render, tcp_open


def storage(state: Path) -> Path:
    """Graphite's storage folder (whisper files, graphite-web's sqlite) under the state folder."""
    return state / "graphite"


def whisper_dir() -> Path:
    return storage(paths.state_dir()) / "whisper"


class _PlainUnpickler(pickle.Unpickler):
    """carbonlink answers in pickle; accept plain containers only, never a class."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def probe() -> Probe:
    if not tcp_open(endpoints.CARBON_PORT):
        return DOWN
    try:
        answer = _query({"type": "cache-query", "metric": "nirvana.health"}, connect_timeout=PROBE_TIMEOUT)
        healthy = isinstance(answer, dict) and "datapoints" in answer
    except (OSError, pickle.UnpicklingError, struct.error, EOFError, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "carbonlink (cache query) did not answer")


def _query(request: dict, *, connect_timeout: float = 2.0, timeout: float = 2.0):
    """One carbonlink request (pickle, length-prefixed) to carbon-cache's query port; its answer.

    Raises OSError when carbon does not answer, ValueError (pickle.UnpicklingError) for an answer
    that is not plain data.
    """
    data = pickle.dumps(request, protocol=2)
    with socket.create_connection((HOST, endpoints.CARBON_QUERY_PORT), timeout=connect_timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(struct.pack("!L", len(data)) + data)
        header = _recv_exactly(conn, 4)
        body = _recv_exactly(conn, struct.unpack("!L", header)[0])
    return _PlainUnpickler(io.BytesIO(body)).load()


def cached(metrics: list[str]) -> set[str]:
    """Which of ``metrics`` (dotted names) have points in carbon's cache, not yet in their whisper
    file: a file deleted now would be created again when carbon writes them. One ``cache-query-bulk``
    (carbon 1.1, carbon/protocols.py). Raises OSError when carbon does not answer."""
    if not metrics:
        return set()
    answer = _query({"type": "cache-query-bulk", "metrics": list(metrics)})
    by_metric = answer.get("datapointsByMetric", {}) if isinstance(answer, dict) else {}
    return {metric for metric, points in by_metric.items() if points}


def metric_of(path: Path) -> str:
    """The dotted metric name of a whisper file under :func:`whisper_dir`."""
    return ".".join(path.relative_to(whisper_dir()).with_suffix("").parts)


def launch(state: Path) -> Launch:
    folder = storage(state)
    (folder / "whisper").mkdir(parents=True, exist_ok=True)
    config = render("carbon/carbon.conf.in", state / "carbon" / "carbon.conf",
                    CONF_DIR=paths.ASSETS / "carbon", STORAGE_DIR=folder,
                    WHISPER_DIR=folder / "whisper", LOG_DIR=state / "carbon", **ports())
    return Launch(["carbon-cache", "--config", str(config), "--pidfile", str(state / "carbon" / "carbon.pid"),
                   "--nodaemon", "--logfile", "-", "start"],
                  {"GRAPHITE_ROOT": str(folder)})


COMPONENT = Component("carbon", f"{HOST}:{endpoints.CARBON_PORT} (cache query {endpoints.CARBON_QUERY_PORT})",
                      (endpoints.CARBON_PORT, endpoints.CARBON_PICKLE_PORT, endpoints.CARBON_QUERY_PORT),
                      probe, launch, (("carbon-cache", "apt package graphite-carbon"),), deadline=30)
