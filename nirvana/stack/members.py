"""The members of a cluster (:mod:`.shape`): how each is launched and what role it plays.

- etcd: three members of one cluster, each with the single-node config of ``assets/etcd`` (its
  compaction, its limits) and its own name, ports and data folder; its role (leader / follower)
  from etcd's maintenance Status call (gRPC: Debian's etcd serves no JSON gateway).
- RabbitMQ: three nodes of the kit's own (:func:`nirvana.stack.rabbitmq.server_launch`: cookie,
  data and configuration under the cluster's folder, never the machine's) that form one cluster
  by RabbitMQ's classic peer discovery; they and their tools find each other through the
  cluster's own epmd (``ERL_EPMD_PORT``), so the machine's epmd and RabbitMQ are never touched.
"""

from __future__ import annotations

import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from svc.errors import SvcError
from svc.etcd import Etcd

from .. import paths
from . import etcd, rabbitmq
from .component import HOST, Launch, Probe, ports
from ..shape import Shape

CTL_TIMEOUT = 30.0      # seconds for one rabbitmqctl call (an Erlang VM starts for each)
STATUS_TIMEOUT = 2.0    # seconds for etcd's Status call


@dataclass(frozen=True)
class Member:
    """One process of a cluster: ``kind`` is ``etcd``, ``rabbitmq`` or ``epmd``; ``index`` 1-3
    (0 for epmd); ``port`` the port it answers on (client, AMQP or epmd)."""

    kind: str
    index: int
    port: int

    @property
    def name(self) -> str:
        return self.kind if self.kind == "epmd" else f"{self.kind}-{self.index}"

    @property
    def address(self) -> str:
        scheme = {"etcd": "http", "rabbitmq": "amqp", "epmd": "epmd"}[self.kind]
        return f"{scheme}://{HOST}:{self.port}"


def members(shape: Shape) -> list[Member]:
    """In start order: epmd, the etcd members, the RabbitMQ nodes."""
    return ([Member("epmd", 0, shape.epmd)]
            + [Member("etcd", i, client) for i, (client, _peer) in enumerate(shape.etcd, 1)]
            + [Member("rabbitmq", i, port) for i, port in enumerate(shape.amqp, 1)])


# -- etcd -------------------------------------------------------------------------------------

def etcd_name(index: int) -> str:
    return f"nirvana-{index}"


def etcd_launch(shape: Shape, index: int) -> Launch:
    """The member's config: assets/etcd's, with the member's name, ports, data and the cluster."""
    client, peer = shape.etcd[index - 1]
    template = (paths.ASSETS / "etcd" / "etcd.conf.yml.in").read_text()
    config = yaml.safe_load(string.Template(template).substitute(
        {**{key: str(value) for key, value in ports().items()}, "DATA_DIR": shape.folder / f"etcd-{index}"}))
    config.update({
        "name": etcd_name(index),
        "listen-client-urls": f"http://{HOST}:{client}", "advertise-client-urls": f"http://{HOST}:{client}",
        "listen-peer-urls": f"http://{HOST}:{peer}", "initial-advertise-peer-urls": f"http://{HOST}:{peer}",
        "initial-cluster": ",".join(f"{etcd_name(i)}=http://{HOST}:{p}" for i, (_c, p) in enumerate(shape.etcd, 1)),
        "initial-cluster-state": "new",   # read on the first start only: later starts use the data
        "initial-cluster-token": f"nirvana-cluster-{shape.etcd[0][0]}",
    })
    path = shape.folder / f"etcd-{index}.conf.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Launch(["etcd", "--config-file", str(path)])


def etcd_status(port: int) -> tuple[int, int] | None:
    """(this member's id, the leader's id) from etcd's maintenance Status call (through svc's etcd
    edge, :meth:`svc.etcd.Etcd.status`), or None when the member does not answer within
    STATUS_TIMEOUT seconds. A leader id of 0: no leader known."""
    client = Etcd([(HOST, port)], timeout=STATUS_TIMEOUT)
    try:
        return client.status()
    except SvcError:
        return None
    finally:
        client.close()


def etcd_role(port: int) -> str:
    """``leader``, ``follower``, ``no leader`` or ``""`` (not answering)."""
    status = etcd_status(port)
    if status is None:
        return ""
    member, leader = status
    return "no leader" if not leader else "leader" if member == leader else "follower"


def etcd_probe(port: int) -> Probe:
    return etcd.probe(port)


# -- RabbitMQ ---------------------------------------------------------------------------------

def node_name(shape: Shape, index: int) -> str:
    return rabbitmq.node_name(shape.amqp[index - 1])


def rabbit_launch(shape: Shape, index: int) -> Launch:
    """The node's start: the kit's own node (:func:`rabbitmq.server_launch`) on the cluster's
    ports, its cookie shared by the three (one HOME), its epmd the cluster's."""
    argv, env = rabbitmq.server_launch(shape.folder, shape.amqp[index - 1], dist_port=shape.dist[index - 1])
    base = rabbitmq.home(shape.folder)
    with open(base / "rabbitmq-env.conf", "a") as conf:   # the tools read it too: they find the epmd
        conf.write(f"export ERL_EPMD_PORT={shape.epmd}\n")
    nodes = "".join(f"cluster_formation.classic_config.nodes.{i} = {node_name(shape, i)}\n"
                    for i in range(1, len(shape.amqp) + 1))
    (base / "rabbitmq.conf").write_text(
        "# The kit's cluster (written by ./kit up --cluster): the nodes join the first one that runs.\n"
        "cluster_formation.peer_discovery_backend = classic_config\n" + nodes +
        "cluster_formation.randomized_startup_delay_range.min = 0\n"
        "cluster_formation.randomized_startup_delay_range.max = 1\n")
    env["ERL_EPMD_PORT"] = str(shape.epmd)
    return Launch(argv, env)


def epmd_launch(shape: Shape) -> Launch:
    """The cluster's own epmd on loopback: it outlives any one node being stopped."""
    return Launch(["epmd", "-address", HOST, "-port", str(shape.epmd)])


def rabbit_node(shape: Shape, index: int) -> rabbitmq.Node:
    """Node ``index`` as its tools address it (``[*node.ctl(), "-q", "cluster_status"]``)."""
    return rabbitmq.Node(node_name(shape, index), True, rabbitmq.home(shape.folder), shape.amqp[index - 1])


def ctl(shape: Shape, index: int, *command: str, timeout: float = CTL_TIMEOUT) -> str:
    """Run ``rabbitmqctl -q <command>`` against node ``index``; its output. Raises
    subprocess.CalledProcessError (or TimeoutExpired) when the tool fails."""
    return subprocess.run([*rabbit_node(shape, index).ctl(), "-q", *command], capture_output=True,
                          text=True, timeout=timeout, check=True).stdout


def running_nodes(shape: Shape, index: int) -> list[str]:
    """The cluster's running nodes as node ``index`` sees them ([] when it cannot be asked)."""
    try:
        out = ctl(shape, index, "eval", "rabbit_mnesia:cluster_nodes(running).")
    except (subprocess.SubprocessError, OSError):
        return []
    return sorted(name.strip(" '\n") for name in out.strip().strip("[]").split(",") if name.strip())


def queue_leaders(shape: Shape, index: int, queues: list[str] | None = None) -> dict[str, str]:
    """{queue: its leader's node name} of the quorum queues and streams (the log), asked of node ``index``; only
    ``queues`` when given. {} when the node cannot be asked."""
    try:
        out = ctl(shape, index, "list_queues", "name", "type", "leader", "--no-table-headers")
    except (subprocess.SubprocessError, OSError):
        return {}
    leaders = {}
    for line in out.splitlines():
        cells = line.split("\t")
        if len(cells) == 3 and cells[1] in ("quorum", "stream") and (queues is None or cells[0] in queues):
            leaders[cells[0]] = cells[2]
    return leaders


def fresh(shape: Shape) -> bool:
    """True when the RabbitMQ nodes have no data yet (the first start forms the cluster)."""
    mnesia = rabbitmq.home(shape.folder) / "mnesia"
    return not any(Path(mnesia).glob("*@*"))
