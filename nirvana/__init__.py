"""Reliability Nirvana presentation kit: the stack, the services, the panels and plots.

Notebooks import from here only: ``import nirvana`` (:func:`reset` at the top of a chapter,
:func:`teardown` at its end) and ``from nirvana import services, rabbit, graphite, ...``.
Every helper takes its broker, exchange, etcd endpoints and prefix from :mod:`nirvana.settings`
(svc's own variables, read once), and raises the kit's errors (:mod:`nirvana.errors`).

``widgets`` and ``plots`` load ipywidgets and matplotlib: they are imported when a notebook asks
for them (``from nirvana import widgets``), so ``python -m nirvana status`` does not pay for them.
"""

import os
import sys
from typing import Callable

# Before gRPC loads (svc's etcd client): no gRPC fork handlers in this process. With them (grpcio's
# default), every fork() of a kernel that has talked to etcd restarts gRPC's threads in the child
# (a process that then closes its files, as a `!command` or pexpect does before its exec, can be
# aborted by gRPC: grpc/grpc#43055). The kit never uses gRPC in a forked child (it always execs);
# an explicit GRPC_ENABLE_FORK_SUPPORT in the environment is kept.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import svc  # noqa: E402 (after the setting above)

from . import effects, graphite, rabbit, services, settings, stack
from .errors import GraphiteError, GraphiteUnavailable, KitError, RabbitUnavailable, ServiceError, SettingError, \
    StackError, WaitTimeout
from .outbox import Outbox
from .own_etcd import OwnEtcd
from .publisher import Publisher, publish_bodies

__all__ = [
    # a chapter's first and last call
    "reset", "teardown",
    # the stack and the services
    "stack", "services",
    # what the talk shows: queues, counters, effects, dead letters; panels and plots
    "rabbit", "graphite", "effects", "deadletters", "widgets", "plots",
    # the later chapters: crashes and outages, the talk's design, the chaos proof, the cost
    "outages", "Outbox", "OwnEtcd", "designs", "chaos", "checker", "cost", "scale",
    # reading events back: the log, rebuilt views, the state as of a moment
    "replay", "history",
    # publishing and where things are
    "Publisher", "publish_bodies", "settings", "ETCD_ENDPOINT", "AMQP_URL",
    # errors
    "KitError", "SettingError", "StackError", "ServiceError", "RabbitUnavailable", "GraphiteError",
    "GraphiteUnavailable", "WaitTimeout",
]


def __getattr__(name: str) -> str:
    """``ETCD_ENDPOINT``: the kit's etcd endpoints as ETCD_ENDPOINTS spells them; ``AMQP_URL``: the
    kit's broker (from the settings, read at first use, so a notebook reads where its services
    wrote)."""
    if name == "ETCD_ENDPOINT":
        return settings.current().etcd_endpoint
    if name == "AMQP_URL":
        return settings.current().amqp_url
    raise AttributeError(f"module 'nirvana' has no attribute {name!r}")


def reset(progress: Callable[[str], None] = print) -> None:
    """Return the whole demo to a clean start in one call.

    Stops every ``svc`` process the kit started, naming each (``orders: stopped``), then purges
    the kit's queues and deletes its etcd keys and whisper files (see :func:`nirvana.stack.reset`);
    each step says what it did through ``progress``. Raises SettingError for a bad setting before
    anything is stopped or deleted. The notebooks' entry point: it installs svc's patches to pika and
    etcd3 (:func:`svc.install_patches`; importing the kit changes no library).
    """
    settings.current()
    svc.install_patches()
    stopped = services.stop_all(progress=lambda line: progress(f"svc           {line}"))
    if not stopped:
        progress("svc           no service was running")
    stack.reset(progress)


def teardown() -> None:
    """End a chapter: stop every ``svc`` process the kit started and say how many are left.

    This kernel's live charts stop too: a chapter left open keeps no thread redrawing beside the
    next chapter's. (A ServicePanel keeps refreshing its lights: they must stay true.)
    """
    if "nirvana.plots" in sys.modules:   # loaded by the chapter: matplotlib is not loaded here
        sys.modules["nirvana.plots"].stop_live_charts()
    services.stop_all()
    print(f"svc processes left: {len(services.running_pids())}")
