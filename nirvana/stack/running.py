"""The stack's processes the kit started: start records, logs, start, wait until healthy, stop.

Every one of them, a component of the single-node stack, JupyterLab or a member of a cluster
(:mod:`.cluster`), is started through :mod:`nirvana.launcher` the same way: the machine's
program in an environment without the kit's virtual environment
(:func:`nirvana.launcher.environment` ``system=True``: carbon and graphite-web run under the
system python3, and no member of a cluster needs the venv either), its log appended, a start
record beside it; then probed until healthy within its deadline (:func:`wait_healthy`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .. import launcher, paths
from ..errors import StackError, WaitTimeout
from ..launcher import Launched, display, tail
from .component import Component, Launch, Probe, Progress

STOP_TIMEOUT = 10.0   # seconds for a component to stop on SIGTERM before SIGKILL


def log_file(name: str) -> Path:
    return paths.log_dir() / f"{name}.log"


def pid_file(name: str) -> Path:
    return paths.state_dir() / f"{name}.pid"


def kit_process(name: str) -> Launched | None:
    """The live process the kit started for component ``name``, or None (a stale pid file is
    removed). The pid file keeps the start time too, so a reused pid is never taken for ours."""
    return launcher.found(name, pid_file(name), log_file(name))


def launch(name: str, how: Launch, *, log: Path, record: Path, cwd: Path) -> Launched:
    """Start ``how`` as ``name`` (a component, a cluster member): the system's environment plus
    ``how.env``, the ``log`` appended, its start record at ``record``."""
    return launcher.start(launcher.Command(how.argv, log, launcher.environment(how.env, system=True), cwd, name=name,
                                           append=True, record=record))


def start(component: Component, how: Launch) -> Launched:
    """Start ``how`` for ``component`` in its own process group, log appended; record it."""
    return launch(component.name, how, log=log_file(component.name), record=pid_file(component.name),
                  cwd=paths.state_dir())


def stop(name: str, process: Launched, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the process group the kit started for ``name`` (TERM, KILL at the deadline); forget it."""
    launcher.stop([process], timeout, kill_wait=timeout)
    pid_file(name).unlink(missing_ok=True)


def wait_healthy(name: str, address: str, process: Launched, probe: Callable[[], Probe], deadline: float, started: float,
                 progress: Progress) -> None:
    """Probe (``probe() -> Probe``) until healthy, ``deadline`` seconds from ``started`` (monotonic).

    Raises StackError (one line, the log's last words) when the process dies or the deadline passes.
    """
    log = process.log or log_file(name)
    try:
        launcher.wait_ready(probe, lambda seen: seen.up, waiting=[process], what=f"{name} to be healthy",
                            timeout=started + deadline - time.monotonic(), progress=_still(name, started, deadline, progress),
                            describe=lambda seen: seen.detail or "not answering", interval=0.2)
    except launcher.Exited:
        if process.record is not None:
            process.record.unlink(missing_ok=True)
        raise StackError(f"{name} died on start; its log {display(log)} ends: {tail(log)}") from None
    except WaitTimeout:
        last: Probe = probe()
        raise StackError(f"{name} not healthy after {deadline:.0f} s ({last.detail or 'not answering'}); "
                         f"see {display(log)}: {tail(log)}") from None
    progress(f"{name:<13} up in {time.monotonic() - started:.1f} s at {address}")


def wait_component(component: Component, process: Launched, started: float, progress: Progress) -> None:
    """:func:`wait_healthy` for a component of the stack, within its ``deadline``."""
    wait_healthy(component.name, component.address, process, component.probe, component.deadline, started, progress)


def _still(name: str, started: float, deadline: float, progress: Progress) -> Progress:
    """The stack's way of saying a wait goes on: only the "still waiting" lines, in its columns."""
    def say(line: str) -> None:
        if line.startswith("  still waiting"):
            progress(f"{name:<13} still waiting ({time.monotonic() - started:.0f} s of {deadline:.0f} s)")
    return say
