"""statsd (Etsy's, from npm): probed on its admin port; run with the machine's Node.js.

The admin port (TCP 8126) also tells how statsd's flushes to carbon went and deletes metrics.
Its protocol, as statsd 0.9.0's ``lib/mgmt_server.js`` and ``stats.js`` implement it: each chunk of
data received is one command (``stats``, ``counters``, ``timers``, ``gauges``, ``delcounters
<name> ...``, ``deltimers``, ``delgauges``, ``health``); the answer ends with ``END`` and a blank
line (``health`` with its one line). ``stats`` gives ``<group>.<metric>: <value>`` lines, each
``last_*`` one as seconds ago; ``counters`` and friends Node's ``util.inspect`` of the object.
"""

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .. import endpoints, paths
from .component import DOWN, HOST, PROBE_TIMEOUT, Component, Launch, Probe

STATSD_VERSION = "0.9.0"   # the one ./kit setup installs into .tools/
ADMIN_TIMEOUT = 2.0        # seconds for an admin answer: statsd answers on loopback at once
OWN_PREFIX = "statsd."     # statsd's own metrics (packets_received, timestamp_lag, ...): never deleted
DELETE_BATCH_BYTES = 4000  # one command per TCP chunk: keep each well inside one
KINDS = ("counters", "timers", "gauges")
# a key as util.inspect prints it: bare when an identifier, else in single or double quotes
_KEY = re.compile(r"""(?:^|[{,]\s*|\n\s*)([A-Za-z_$][\w$]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"): """)


def main_script() -> Path:
    return paths.ROOT / ".tools" / "statsd" / "node_modules" / "statsd" / "stats.js"


def probe() -> Probe:
    try:
        with socket.create_connection((HOST, endpoints.STATSD_ADMIN_PORT), timeout=PROBE_TIMEOUT) as conn:
            conn.settimeout(1)
            conn.sendall(b"health\n")
            answer = conn.recv(64)
    except ConnectionRefusedError:
        return DOWN
    except OSError:
        answer = b""
    if answer.startswith(b"health: up"):
        return Probe("up")
    return Probe("unhealthy", "admin port did not answer `health: up`")


def launch(state: Path) -> Launch:
    return Launch(["node", str(main_script()), str(paths.ASSETS / "statsd" / "config.js")])


def admin(command: str, *, host: str = HOST, port: int = endpoints.STATSD_ADMIN_PORT,
          timeout: float = ADMIN_TIMEOUT) -> str:
    """Send one admin command and return statsd's answer up to its ``END`` line (not included).

    Raises OSError (ConnectionRefusedError: statsd is not running; TimeoutError) when statsd does
    not answer in ``timeout`` seconds.
    """
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(command.encode("ascii") + b"\n")
        data = b""
        while not data.endswith(b"END\n\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionResetError(f"statsd closed its admin connection answering {command.split()[0]!r}")
            data += chunk
    return data[: -len(b"END\n\n")].decode("ascii", errors="replace")


@dataclass(frozen=True)
class FlushState:
    """What statsd's admin ``stats`` says of its flushes to carbon, read at ``read_at``.

    ``started``, ``last_flush``: Unix seconds (statsd's own clock, whole seconds): when statsd
    started, and when its Graphite backend last delivered a flush to carbon. (statsd's
    ``graphite.last_exception`` is left out: 0.9.0 sets it only for an exception thrown while
    opening the connection, never for a refused one, which Node reports later as an event.)
    """

    read_at: float
    started: float
    last_flush: float


def flush_state(*, host: str = HOST, port: int = endpoints.STATSD_ADMIN_PORT) -> FlushState:
    """statsd's uptime and last delivered flush from its admin ``stats`` command.

    Raises OSError when statsd does not answer, ValueError when the answer lacks either line.
    """
    answer = admin("stats", host=host, port=port)
    now = round(time.time())   # statsd's "seconds ago" are from Math.round(Date.now() / 1000)
    values = {}
    for line in answer.splitlines():
        key, _, value = line.partition(": ")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            continue
    try:
        return FlushState(time.time(), now - values["uptime"], now - values["graphite.last_flush"])
    except KeyError as missing:
        raise ValueError(f"statsd's admin `stats` has no {missing.args[0]} line") from None


def metric_names(kind: str, *, host: str = HOST, port: int = endpoints.STATSD_ADMIN_PORT) -> list[str]:
    """The names of statsd's ``kind`` ("counters", "timers" or "gauges"), statsd's own included."""
    names = []
    for match in _KEY.finditer(admin(kind, host=host, port=port)):
        key = match.group(1)
        if key[0] in "'\"":
            key = re.sub(r"\\(.)", r"\1", key[1:-1])
        names.append(key)
    return names


def delete_metrics(*, host: str = HOST, port: int = endpoints.STATSD_ADMIN_PORT) -> dict[str, int]:
    """Delete every counter, timer and gauge from statsd but its own (``statsd.*``).

    statsd sends each counter it knows at every flush (a zero when idle: ``deleteCounters`` is off),
    so a metric it still knows comes back in Graphite within a second of its whisper files being
    deleted. Returns how many of each kind were deleted. Raises OSError when statsd does not answer.
    """
    deleted = {}
    for kind in KINDS:
        names = [name for name in metric_names(kind, host=host, port=port) if not name.startswith(OWN_PREFIX)]
        batch: list[str] = []
        for name in names + [None]:
            if name is None or sum(len(n) + 1 for n in batch) + len(name) > DELETE_BATCH_BYTES:
                if batch:
                    admin(f"del{kind} {' '.join(batch)}", host=host, port=port)
                batch = []
            if name is not None:
                batch.append(name)
        deleted[kind] = len(names)
    return deleted


COMPONENT = Component("statsd", f"udp://{HOST}:{endpoints.STATSD_PORT} (admin {endpoints.STATSD_ADMIN_PORT})",
                      (endpoints.STATSD_ADMIN_PORT,), probe, launch,
                      (("node", "Node.js (apt package nodejs)"),
                       (str(main_script()), f"npm statsd@{STATSD_VERSION} in .tools/")),
                      deadline=15, udp_ports=(endpoints.STATSD_PORT,))
