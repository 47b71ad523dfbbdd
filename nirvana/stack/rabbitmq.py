"""RabbitMQ: probed by opening an AMQP connection; started, when none answers, as the kit's own node.

The node that answers on the kit's AMQP port is one of two, and every tool call that addresses it
(``rabbitmqctl`` in the kit, the tests and the benches) goes through :func:`node`:

- the kit started it (no RabbitMQ answered at ``./kit up``, as on a new machine): the kit's own
  node, ``nirvana@localhost``, with its own Erlang cookie, data, logs and epmd, all under the
  state folder (``state/rabbitmq/``); nothing of the machine's RabbitMQ set-up is read
  (``/etc/rabbitmq``, ``/var/lib/rabbitmq``, its cookie, its node name);
- a RabbitMQ was found running (the system's service, a docker-compose stack): the machine's own
  ``rabbitmqctl`` with the machine's own settings addresses it, as an operator would.

The cookie is never put on a command line (``--erlang-cookie`` would show it in ``ps``): the tools
find it as ``$HOME/.erlang.cookie``, Erlang's rule
(https://www.erlang.org/doc/reference_manual/distributed.html#security).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from svc import amqp
from svc.errors import SvcError

from .. import endpoints, paths
from .component import DOWN, HOST, Component, Launch, Probe, tcp_open
from .running import display, kit_process


PROBE_AMQP_TIMEOUT = 2.0   # seconds for TCP and the AMQP handshake on loopback


def probe() -> Probe:
    if not tcp_open(endpoints.AMQP_PORT):
        return DOWN
    try:
        amqp.connect(endpoints.AMQP_URL, PROBE_AMQP_TIMEOUT, name="nirvana-probe").close()
    except SvcError as error:   # svc's broker edge translated it: "not RabbitMQ, or not ready"
        return Probe("unhealthy", f"no AMQP connection ({type(error).__name__})")
    except amqp.BROKER_ERRORS as error:   # the close itself failed: it answered, then dropped us
        return Probe("unhealthy", f"AMQP connection dropped ({type(error).__name__})")
    return Probe("up")


BIN = Path("/usr/lib/rabbitmq/bin")   # Debian's rabbitmq-server: the scripts without the root->rabbitmq wrapper
SERVER = BIN / "rabbitmq-server"
NODE_HOST = "localhost"
# The distribution listener and epmd answer on loopback only, as everything of the kit.
LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"
# rabbitmqctl starts an Erlang VM for each call: 0.6 s on an idle machine; beside two CPU-burning
# processes on 2 cores (load ~10), 5 interleaved rounds of `list_connections pid client_properties`
# took 3.9-18.7 s (median 11.6; 30 s was once not enough), and 1.8-3.3 s (median 2.1) with its
# schedulers told not to busy-wait (a spinning scheduler fights the broker it asks for the cores;
# one scheduler alone: median 8.2 s). Every tool call of the kit gets it (RabbitNode.ctl); the
# user's own RABBITMQ_CTL_ERL_ARGS wins.
CTL_ERL_ARGS = "+sbwt none +sbwtdcpu none +sbwtdio none"


def node_name(amqp_port: int = endpoints.AMQP_PORT) -> str:
    """The kit's node name for a node on ``amqp_port``: ``nirvana@localhost`` on the kit's port,
    ``nirvana_<port>@localhost`` elsewhere (a test's throwaway node), so two never clash in epmd."""
    alive = "nirvana" if amqp_port == endpoints.AMQP_PORT else f"nirvana_{amqp_port}"
    return f"{alive}@{NODE_HOST}"


def home(state: Path | None = None) -> Path:
    """The kit's node folder: ``HOME`` of the node and of its tools (``.erlang.cookie``), the
    data (``mnesia/``), RabbitMQ's own log folder (``log/``) and its configuration files."""
    return (state or paths.state_dir()) / "rabbitmq"


def _tool_env(state: Path, amqp_port: int) -> dict[str, str]:
    """What the kit's node and its tools share: the cookie's HOME, the node name, the kit's own
    rabbitmq-env.conf (never /etc/rabbitmq/rabbitmq-env.conf), epmd on loopback."""
    base = home(state)
    return {
        "HOME": str(base),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_NODENAME": node_name(amqp_port),
        "ERL_EPMD_ADDRESS": HOST,
    }


def server_launch(state: Path, amqp_port: int = endpoints.AMQP_PORT,
                  dist_port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start the kit's own node on ``amqp_port``, its files under
    ``home(state)``; ``dist_port`` is Erlang distribution's port (default ``amqp_port + 20000``,
    RabbitMQ's rule: https://www.rabbitmq.com/docs/networking#ports).

    The argv is a shell that first starts an epmd of the node's own (in the node's process group,
    so stopping the node stops it; it exits at once when the machine's epmd already answers) and
    waits up to 5 s for an epmd to answer; otherwise Erlang would start ``epmd -daemon``, which
    leaves the group and outlives ``./kit down``.
    """
    base = home(state)
    for folder in (base / "mnesia", base / "log"):
        folder.mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text(
        "# The kit's node reads this, never /etc/rabbitmq/rabbitmq-env.conf (written by ./kit up).\n"
        f'export ERL_FLAGS="{LOOPBACK_DIST}"\n')
    env = {
        **_tool_env(state, amqp_port),
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port or amqp_port + endpoints.DIST_OFFSET),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        # absent files: the defaults, not the machine's /etc/rabbitmq/rabbitmq.conf or advanced.config
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
    }
    script = ('epmd -address "$ERL_EPMD_ADDRESS" & '
              'i=0; until epmd -names >/dev/null 2>&1 || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.1; done; '
              'exec "$@"')
    # Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user, who cannot write the state
    # folder; the script underneath runs the broker as whoever starts it.
    return ["/bin/sh", "-c", script, "rabbitmq", str(SERVER)], env


@dataclass(frozen=True)
class Node:
    """The node behind the kit's AMQP port, as its tools address it.

    ``name`` is the node name (None: the machine's default node, whatever its settings name);
    ``home`` holds the kit's node's cookie (None for a node found running).
    """

    name: str | None
    started_by_kit: bool
    home: Path | None = None
    amqp_port: int = endpoints.AMQP_PORT

    def program(self, tool: str = "rabbitmqctl") -> str:
        """The tool's program: the kit's node's under /usr/lib/rabbitmq/bin, else the one on PATH."""
        return str(BIN / tool) if self.started_by_kit else tool

    def ctl(self, tool: str = "rabbitmqctl") -> list[str]:
        """The argv prefix of a RabbitMQ tool (``rabbitmqctl``, ``rabbitmq-diagnostics``...)
        addressing this node: append the command, e.g. ``[*node.ctl(), "-q", "list_connections"]``."""
        erl_args = f"RABBITMQ_CTL_ERL_ARGS={os.environ.get('RABBITMQ_CTL_ERL_ARGS', CTL_ERL_ARGS)}"
        if not self.started_by_kit:
            return ["env", erl_args, self.program(tool)]
        env = _tool_env(self.home.parent, self.amqp_port)
        return ["env", *(f"{key}={value}" for key, value in env.items()), erl_args, self.program(tool), "-n", self.name]

    def refused(self) -> str | None:
        """Why this user may not run the tools of a node found running (the first line of
        rabbitmqctl's answer: "Only root or rabbitmq should run rabbitmqctl", a cookie it cannot
        read, not on PATH), or None when it may (always for the kit's own node). One rabbitmqctl
        call: seconds; one that does not answer within 60 s counts as permitted (busy, not refused)."""
        if self.started_by_kit:
            return None
        try:
            run = subprocess.run([*self.ctl(), "-q", "list_vhosts", "name"], capture_output=True, text=True,
                                 timeout=60)
        except subprocess.TimeoutExpired:
            return None
        if run.returncode == 0:
            return None
        if run.returncode == 127:
            return "rabbitmqctl is not on PATH"
        # Debian's wrapper prints the usage first and its refusal last: the line that says why
        lines = [line.strip() for line in f"{run.stdout}\n{run.stderr}".splitlines() if line.strip()]
        why = [line for line in lines if line.startswith(("Only root", "Error:", "Authentication failed"))]
        return (why or lines or [f"rabbitmqctl exited with {run.returncode}"])[-1]

    def limits(self) -> str | None:
        """One line for ``./kit up`` and ``./kit status`` when this user may not run the tools of a
        node found running: what the kit does instead and what will not work; None otherwise."""
        reason = self.refused()
        if reason is None:
            return None
        return (f"rabbitmq: found running, and its rabbitmqctl refuses this user ({reason}): a connection is "
                "closed at the TCP level instead (chapter 5 (d), chapter 7); ./kit status cannot list its "
                "connections, and the tests that use rabbitmqctl on it skip. For all of it: run as root, or "
                "stop that RabbitMQ so that ./kit up starts the kit's own")

    def describe(self) -> str:
        """One line for ``./kit status``: which node, and where its cookie, data and logs live."""
        if not self.started_by_kit:
            return self.limits() or ("rabbitmq node: found running, not the kit's; rabbitmqctl addresses it with "
                                     "the machine's own settings (node name and cookie)")
        return (f"rabbitmq node: {self.name}, started by the kit; cookie {display(self.home / '.erlang.cookie')}, "
                f"data {display(self.home / 'mnesia')}, log {display(paths.log_dir() / 'rabbitmq.log')}")


def node(amqp_port: int = endpoints.AMQP_PORT) -> Node:
    """The node that answers on ``amqp_port``: the kit's own when the kit started RabbitMQ (its pid
    file under the state folder names a live process), the machine's otherwise."""
    if kit_process("rabbitmq") is not None:
        return Node(node_name(amqp_port), True, home(), amqp_port)
    return Node(None, False, None, amqp_port)


def launch(state: Path) -> Launch:
    return Launch(*server_launch(state))


COMPONENT = Component("rabbitmq", f"amqp://{HOST}:{endpoints.AMQP_PORT}",
                      (endpoints.AMQP_PORT,), probe, launch,
                      ((str(SERVER), "apt package rabbitmq-server"), ("epmd", "apt package erlang-base")),
                      deadline=60)
