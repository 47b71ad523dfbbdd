"""Where each component of the stack answers: one place for every address the kit uses.

Everything binds to 127.0.0.1. The same ports are published by docker-compose.yaml.
"""

HOST = "127.0.0.1"

AMQP_PORT = 5672
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
STATSD_PORT = 8125          # UDP
STATSD_ADMIN_PORT = 8126    # TCP
CARBON_PORT = 2003          # plaintext protocol
CARBON_PICKLE_PORT = 2004
CARBON_QUERY_PORT = 7002    # carbonlink: graphite-web reads not-yet-written points here
GRAPHITE_PORT = 8080        # graphite-web (render API and UI)
LAB_PORT = 8888             # JupyterLab, started by `./kit present`
EPMD_PORT = 4369            # Erlang's port mapper (the machine's)
DIST_OFFSET = 20000         # a RabbitMQ node's Erlang distribution: its AMQP port + 20000 (RabbitMQ's rule,
                            # https://www.rabbitmq.com/docs/networking#ports)

# guest/guest is RabbitMQ's loopback-only default account; it is no secret.
AMQP_URL = f"amqp://guest:guest@{HOST}:{AMQP_PORT}/%2F"
ETCD_ENDPOINT = f"{HOST}:{ETCD_PORT}"
GRAPHITE_URL = f"http://{HOST}:{GRAPHITE_PORT}"

# `./kit up --cluster` (nirvana/stack/cluster.py): three etcd members and three RabbitMQ nodes of
# the kit's own. 5672 stays the system RabbitMQ's; the nodes' Erlang distribution listens on
# AMQP + 20000 (RabbitMQ's rule) and they find each other through an epmd of the cluster's own,
# never the machine's on 4369.
CLUSTER_ETCD_PORTS = (2379, 22379, 32379)
CLUSTER_ETCD_PEER_PORTS = (2380, 22380, 32380)
CLUSTER_AMQP_PORTS = (5673, 5674, 5675)
CLUSTER_EPMD_PORT = 24369


def fixed_ports() -> frozenset[int]:
    """Every port number above, with each RabbitMQ node's distribution port (AMQP + DIST_OFFSET):
    the ones a free port (:func:`nirvana.launcher.free_ports`) must never be, as a stack restarting
    or a cluster coming up binds them again."""
    ports: set[int] = set()
    for name, value in globals().items():
        if name.endswith(("_PORT", "_PORTS")) and isinstance(value, (int, tuple)):
            ports.update(value if isinstance(value, tuple) else (value,))
    return frozenset(ports | {amqp + DIST_OFFSET for amqp in (AMQP_PORT, *CLUSTER_AMQP_PORTS)})
