"""RabbitMQ: probed by opening an AMQP connection; started from Debian's rabbitmq-server."""

from pathlib import Path

from .. import endpoints
from .component import DOWN, HOST, Component, Launch, Probe, tcp_open

# Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user, who cannot write the state
# folder; the script underneath runs the broker as whoever starts it.
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def probe() -> Probe:
    if not tcp_open(endpoints.AMQP_PORT):
        return DOWN
    import pika  # imported here: `python -m nirvana status` should not pay for it when unused

    params = pika.URLParameters(endpoints.AMQP_URL)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:  # any failure to open an AMQP connection is "not RabbitMQ, or not ready"
        return Probe("unhealthy", f"no AMQP connection ({type(exc).__name__})")
    return Probe("up")


def launch(state: Path) -> Launch:
    base = state / "rabbitmq"
    env = {
        "RABBITMQ_NODENAME": "nirvana@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(endpoints.AMQP_PORT),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "ERL_EPMD_ADDRESS": HOST,
    }
    (base / "mnesia").mkdir(parents=True, exist_ok=True)
    (base / "log").mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    return Launch([RABBITMQ_BIN], env)


COMPONENT = Component("rabbitmq", f"amqp://{HOST}:{endpoints.AMQP_PORT}",
                      (endpoints.AMQP_PORT,), probe, launch,
                      ((RABBITMQ_BIN, "apt package rabbitmq-server"),), deadline=60)
