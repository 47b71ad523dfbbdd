"""The shape of a cluster: which ports its three etcd members and three RabbitMQ nodes use, and
where their data lives; the kit's cluster shape is recorded in the state folder while it runs.

Two shapes are made here:

- :func:`kit_shape`: ``./kit up --cluster``, on the ports of :mod:`nirvana.endpoints` (etcd
  clients 2379, 22379, 32379; AMQP 5673-5675), data under ``state/cluster/``. While it runs its
  shape is recorded in ``state/cluster.json`` (:func:`recorded`): ``status``, ``down``, ``reset``
  and the kit's settings (:mod:`nirvana.settings`) follow it.
- :func:`private_shape`: free loopback ports and a folder of the caller's, for a chapter or a
  test that needs a cluster of its own beside the single-node stack (its etcd on 2379).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import endpoints, paths
from .launcher import free_ports

HOST = endpoints.HOST
SIZE = 3
RECORD = "cluster.json"


@dataclass(frozen=True)
class Shape:
    """A cluster's ports and folder.

    ``etcd``: (client port, peer port) per member; ``amqp``: the AMQP port per node; ``dist``:
    each node's Erlang distribution port; ``epmd``: the port of the cluster's own epmd;
    ``folder``: where the members' data, pid files and logs live.
    """

    folder: Path
    etcd: tuple[tuple[int, int], ...]
    amqp: tuple[int, ...]
    dist: tuple[int, ...]
    epmd: int

    @property
    def etcd_endpoints(self) -> str:
        """The members' client addresses as ETCD_ENDPOINTS spells them (``host:port,...``)."""
        return ",".join(f"{HOST}:{client}" for client, _peer in self.etcd)

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """One AMQP URL per node (guest/guest: RabbitMQ's loopback-only default account)."""
        return tuple(f"amqp://guest:guest@{HOST}:{port}/%2F" for port in self.amqp)

    @property
    def amqp_url(self) -> str:
        """Every node's URL, comma-separated: AMQP_URL for a service that fails over between them."""
        return ",".join(self.amqp_urls)

    def environment(self) -> dict[str, str]:
        """svc's variables for this cluster (AMQP_URL, ETCD_ENDPOINTS, QUEUE_TYPE=quorum: queues
        replicated on the three nodes), for a service or the kit's settings."""
        return {"AMQP_URL": self.amqp_url, "ETCD_ENDPOINTS": self.etcd_endpoints, "QUEUE_TYPE": "quorum"}

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "folder": str(self.folder)})

    @classmethod
    def from_json(cls, text: str) -> "Shape":
        """The shape written by :meth:`to_json`; ValueError (or KeyError, TypeError) when it is not one."""
        data = json.loads(text)
        return cls(folder=Path(data["folder"]), etcd=tuple((int(c), int(p)) for c, p in data["etcd"]),
                   amqp=tuple(int(p) for p in data["amqp"]), dist=tuple(int(p) for p in data["dist"]),
                   epmd=int(data["epmd"]))


def kit_shape() -> Shape:
    """The shape of ``./kit up --cluster``: the ports of :mod:`nirvana.endpoints`, ``state/cluster/``."""
    return Shape(folder=paths.state_dir() / "cluster",
                 etcd=tuple(zip(endpoints.CLUSTER_ETCD_PORTS, endpoints.CLUSTER_ETCD_PEER_PORTS, strict=True)),
                 amqp=endpoints.CLUSTER_AMQP_PORTS,
                 dist=tuple(port + endpoints.DIST_OFFSET for port in endpoints.CLUSTER_AMQP_PORTS),
                 epmd=endpoints.CLUSTER_EPMD_PORT)


def private_shape(folder: Path) -> Shape:
    """A cluster on free loopback ports with its files under ``folder`` (a chapter's, a test's)."""
    ports = free_ports(4 * SIZE + 1)
    return Shape(folder=Path(folder), etcd=tuple(zip(ports[0:3], ports[3:6], strict=True)),
                 amqp=tuple(ports[6:9]), dist=tuple(ports[9:12]), epmd=ports[12])


def record_file() -> Path:
    return paths.state_dir() / RECORD


def recorded() -> Shape | None:
    """The kit's cluster shape while ``./kit up --cluster`` holds (None: the single-node stack)."""
    try:
        return Shape.from_json(record_file().read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None   # not a shape (a file from elsewhere): the single-node stack


def record(shape: Shape) -> None:
    record_file().parent.mkdir(parents=True, exist_ok=True)
    record_file().write_text(shape.to_json() + "\n")


def forget() -> None:
    record_file().unlink(missing_ok=True)
