"""The stack's processes the kit started: pid files, logs, start, wait until healthy, stop.

The supervision itself (process groups, start records, stopping) is :mod:`nirvana.processes`;
this module adds what is particular to the stack: a pid file per component under the state
folder, an appended log per component, and the environment the system's programs run in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from .. import paths, processes
from ..errors import StackError
from .component import Component, Launch, Progress

STOP_TIMEOUT = 10.0   # seconds for a component to stop on SIGTERM before SIGKILL


def log_file(name: str) -> Path:
    return paths.log_dir() / f"{name}.log"


def pid_file(name: str) -> Path:
    return paths.state_dir() / f"{name}.pid"


def display(path: Path) -> str:
    """A path as the user reads it: relative to the kit's root when it is inside."""
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def kit_process(name: str) -> psutil.Process | None:
    """The live process the kit started for component ``name``, or None (a stale pid file is
    removed). The pid file keeps the start time too, so a reused pid is never taken for ours."""
    path = pid_file(name)
    if not path.exists():
        return None
    record = processes.read_record(path)
    process = processes.recorded_process(record) if record else None
    if process is None:
        path.unlink(missing_ok=True)
    return process


def start(component: Component, launch: Launch) -> psutil.Process:
    """Start ``launch`` for ``component`` in its own process group, log appended; record it."""
    env = {**os.environ, **launch.env}
    # The venv's variables must not leak into the system python3 that runs carbon and graphite-web.
    for leaking in ("VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(leaking, None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(paths.ROOT / ".venv")))
    child = processes.spawn(launch.argv, log=log_file(component.name), env=env, cwd=paths.state_dir(),
                            append=True)
    process = psutil.Process(child.pid)
    started = process.create_time()
    # "create_time" too: a kit from before nirvana.processes may share this state folder and reads
    # only that name (it takes a pid file it cannot read for stale and deletes it)
    processes.write_record(pid_file(component.name),
                           {"pid": child.pid, "started": started, "create_time": started, "argv": launch.argv})
    return process


def stop(name: str, process: psutil.Process, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the process group the kit started for ``name`` (TERM, KILL at the deadline); forget it."""
    processes.stop_groups([process.pid], timeout, kill_wait=timeout)
    pid_file(name).unlink(missing_ok=True)


def tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a log on one line, for an error message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def wait_healthy(component: Component, process: psutil.Process, started: float, progress: Progress) -> None:
    """Probe until healthy, ``component.deadline`` seconds from ``started`` (monotonic).

    Raises StackError (one line, the log's last words) when the process dies or the deadline passes.
    """
    deadline = started + component.deadline
    next_note = time.monotonic() + 5
    log = log_file(component.name)
    while True:
        probe = component.probe()
        if probe.up:
            progress(f"{component.name:<13} up in {time.monotonic() - started:.1f} s at {component.address}")
            return
        if not processes.alive(process):
            processes.reap(process.pid)
            pid_file(component.name).unlink(missing_ok=True)
            raise StackError(f"{component.name} died on start; its log {display(log)} ends: {tail(log)}")
        now = time.monotonic()
        if now >= deadline:
            raise StackError(f"{component.name} not healthy after {component.deadline:.0f} s "
                             f"({probe.detail or 'not answering'}); see {display(log)}: {tail(log)}")
        if now >= next_note:
            progress(f"{component.name:<13} still waiting ({now - started:.0f} s of {component.deadline:.0f} s)")
            next_note = now + 5
        time.sleep(0.2)
