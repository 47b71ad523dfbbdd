"""RabbitMQ: probed by opening an AMQP connection; started from Debian's rabbitmq-server."""

from pathlib import Path

from svc import _amqp
from svc.errors import SvcError

from .. import endpoints
from .component import DOWN, HOST, Component, Launch, Probe, tcp_open

# Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user, who cannot write the state
# folder; the script underneath runs the broker as whoever starts it.
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"
PROBE_AMQP_TIMEOUT = 2.0   # seconds for TCP and the AMQP handshake on loopback


def probe() -> Probe:
    if not tcp_open(endpoints.AMQP_PORT):
        return DOWN
    try:
        _amqp.connect(endpoints.AMQP_URL, PROBE_AMQP_TIMEOUT, name="nirvana-probe").close()
    except SvcError as error:   # svc's broker edge translated it: "not RabbitMQ, or not ready"
        return Probe("unhealthy", f"no AMQP connection ({type(error).__name__})")
    except _amqp.BROKER_ERRORS as error:   # the close itself failed: it answered, then dropped us
        return Probe("unhealthy", f"AMQP connection dropped ({type(error).__name__})")
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
