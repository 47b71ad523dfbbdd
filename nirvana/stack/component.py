"""What every component of the stack is: how to probe it, how to launch it, what it needs.

Its TCP probe is the launcher's (:func:`nirvana.launcher.tcp_open`), re-exported here."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import endpoints, paths
from ..launcher import PROBE_TIMEOUT, tcp_open  # noqa: F401 (the stack's probes use them from here)

HOST = endpoints.HOST
SETUP_HINT = "run `./kit setup`"
DOCKER_HINT = "or use `docker compose up -d` (see README.md)"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Probe:
    """The answer of a health check: ``up``, ``down`` (nothing listens) or ``unhealthy``."""

    state: str
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"


DOWN = Probe("down")


@dataclass(frozen=True)
class Launch:
    """How to start a component: its command line and the variables added to the environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    """One component of the stack, as ``up``, ``status`` and ``down`` handle it."""

    name: str
    address: str
    tcp_ports: tuple[int, ...]          # every TCP port it listens on (for "port held by ...")
    probe: Callable[[], Probe]
    launch: Callable[[Path], Launch]    # state dir -> how to start it
    needs: tuple[tuple[str, str], ...]  # (path that must exist, what provides it)
    deadline: float                     # seconds to become healthy after the start
    udp_ports: tuple[int, ...] = ()


def render(template: str, target: Path, **values: object) -> Path:
    """Write ``assets/<template>`` with its ``$NAME`` placeholders filled in to ``target``."""
    text = string.Template((paths.ASSETS / template).read_text()).substitute(
        {key: str(value) for key, value in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def ports() -> dict[str, object]:
    """Every address constant of :mod:`nirvana.endpoints`, for the config templates."""
    return {name: getattr(endpoints, name) for name in dir(endpoints) if name.isupper()}


@dataclass(frozen=True)
class Row:
    """One component as ``status`` sees it."""

    name: str
    address: str
    state: str        # up | down | unhealthy
    origin: str       # "started by kit" | "found running" | ""
    log: str          # the log file when the kit started it
    detail: str = ""
    role: str = ""    # a cluster member's: leader / follower, running / not running

    @property
    def healthy(self) -> bool:
        return self.state == "up"
