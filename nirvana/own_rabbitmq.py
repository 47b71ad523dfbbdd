"""A throwaway RabbitMQ node on free ports, and the one way tests reach a node's CLI (rabbitmqctl).

For resource alarms and a node stopped mid-stream: never the system's node, never the kit's.
Used by the tests through ``nirvana.testing`` (the ``own_rabbitmq`` fixture), beside the throwaway
etcd of nirvana/own_etcd.py; started, awaited and stopped by :mod:`nirvana.launcher`.
"""

import os
import subprocess
import uuid

from svc import amqp

from . import launcher
from .launcher import tcp_open
from .watchdog import Watchdog

START_TIMEOUT = 60.0    # seconds for a fresh node to speak AMQP
STOP_TIMEOUT = 30.0     # seconds for a node to stop before SIGKILL

RABBITMQCTL_TIMEOUT = 30.0
RABBITMQCTL_UNWRAPPED = "/usr/lib/rabbitmq/bin/rabbitmqctl"  # Debian's script under /usr/sbin's wrapper


def rabbitmqctl(*args: str, node: str | None = None, home: str | None = None,
                timeout: float = RABBITMQCTL_TIMEOUT) -> str:
    """Run ``rabbitmqctl -q *args`` against the broker node the tests use; its stdout.

    ``node`` (with ``home``, the HOME whose Erlang cookie that node was started with) reaches another
    node, such as a test's throwaway one; Debian's wrapper, which switches to the rabbitmq user and
    its cookie, is then bypassed. The one place tests reach a node's CLI, so where the kit's node is
    can be set here alone. Raises CalledProcessError (with the tool's stderr) or TimeoutExpired."""
    program, env = "rabbitmqctl", None
    if home:
        program, env = RABBITMQCTL_UNWRAPPED, {**os.environ, "HOME": home}
    target = ["-n", node] if node else []
    return subprocess.run([program, "-q", *target, *args], capture_output=True, text=True, timeout=timeout,
                          check=True, env=env).stdout


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's script underneath /usr/sbin's


class OwnRabbitMQ:
    """A throwaway RabbitMQ node on free ports, its files under ``base`` (for resource alarms, a node
    stopped mid-stream; never the system's node, never the kit's). ``wait()`` until it speaks AMQP,
    ``stop()`` it (rabbitmqctl stop, SIGKILL to its group after 30 s). Should the starter die without
    ``stop()`` (a test run SIGKILLed), its watchdog (:class:`nirvana.watchdog.Watchdog`) stops the
    node's group."""

    def __init__(self, base, environment: dict[str, str] | None = None) -> None:
        """``environment``: more of the node's variables (e.g. RABBITMQ_FEATURE_FLAGS, the feature
        flags a fresh node enables)."""
        self.port, dist = launcher.free_ports(2)
        self.node = f"t{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        (base / "mnesia").mkdir(parents=True)
        (base / "enabled_plugins").write_text("[].\n")
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
                    "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(dist),
                    "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base),
                    "RABBITMQ_LOGS": str(base / "rabbit.log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                    "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"), "ERL_EPMD_ADDRESS": "127.0.0.1",
                    "HOME": str(base), **(environment or {})}  # its own Erlang cookie, made there
        self.home = str(base)
        self._watchdog = Watchdog(stop_timeout=STOP_TIMEOUT)
        # its output: the node's own logs are under base (RABBITMQ_LOGS); stdout says little more
        self.process = launcher.start(launcher.Command([RABBITMQ_SERVER], base / "rabbitmq-server.out", self.env, base,
                                                       name=f"rabbitmq-server {self.node}"))
        self._watchdog.group(self.process.pid)

    def wait(self) -> None:
        """Wait until it takes TCP connections, then open one AMQP connection (within START_TIMEOUT
        seconds). Raises RuntimeError when the node exits meanwhile, TimeoutError at the deadline."""
        try:
            launcher.wait_ready(lambda: tcp_open(self.port, timeout=0.5), bool, waiting=[self.process],
                                what=f"RabbitMQ node {self.node} on port {self.port}", timeout=START_TIMEOUT,
                                interval=0.5)
        except launcher.Exited:
            raise RuntimeError(f"rabbitmq-server {self.node} exited with {self.process.returncode}") from None
        amqp.connect(self.url, START_TIMEOUT, name="nirvana-own-rabbitmq").close()  # it speaks AMQP (bounded)

    def ctl(self, *args: str) -> str:
        return rabbitmqctl(*args, node=self.node, home=self.home)

    def stop(self) -> None:
        """``rabbitmqctl stop``; SIGKILL to its process group if it has not ended STOP_TIMEOUT seconds later."""
        try:
            self.ctl("stop")
        except (subprocess.SubprocessError, OSError):
            pass
        launcher.stop([self.process], STOP_TIMEOUT, kill_wait=10)
        self._watchdog.close()
