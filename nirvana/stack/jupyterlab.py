"""JupyterLab for ``./kit present``: not part of the stack, but started the same way (pid file,
log, own process group), so that ``down`` stops it too."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import requests

from .. import endpoints, paths, present
from ..errors import StackError
from .component import DOWN, HOST, SETUP_HINT, Component, Launch, Probe, Progress, tcp_open
from .ports import held_error, port_holder
from .running import display, kit_process, log_file, start, wait_component

LAB_PORT = endpoints.LAB_PORT


def probe() -> Probe:
    if not tcp_open(LAB_PORT):
        return DOWN
    try:
        answer = requests.get(f"http://{HOST}:{LAB_PORT}/api", timeout=2)
        healthy = answer.status_code == 200 and "version" in answer.json()
    except (requests.RequestException, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "/api did not answer like Jupyter")


def _launch_elsewhere(state: Path) -> Launch:
    raise StackError("JupyterLab is started by `./kit present` (nirvana.stack.lab()), not by up")


LAB = Component("jupyterlab", f"http://{HOST}:{LAB_PORT}/lab", (LAB_PORT,), probe,
                _launch_elsewhere, (), deadline=60)


def lab_token_file() -> Path:
    return paths.state_dir() / "jupyterlab.token"


def lab_url() -> str:
    token = lab_token_file().read_text().strip() if lab_token_file().exists() else ""
    return f"http://{HOST}:{LAB_PORT}/lab" + (f"?token={token}" if token else "")


def lab(open_browser: bool = True, progress: Progress = print, fresh: bool = False) -> str:
    """Start JupyterLab on a copy of the chapters under state/present/ in the background (once);
    returns its URL (token included). The checkout's notebooks stay as they are
    (:mod:`nirvana.present`); ``fresh`` copies every chapter again.

    Raises StackError when its port is held by another program or it is not installed.
    """
    if probe().up:
        if kit_process(LAB.name) is None:
            progress(f"JupyterLab found running on port {LAB_PORT} (not the kit's); its URL has its own token")
            return f"http://{HOST}:{LAB_PORT}/lab"
        if fresh:
            progress(f"copied again: {', '.join(present.prepare(fresh=True)) or 'nothing'}")
        return lab_url()
    process = kit_process(LAB.name)
    if process is None:
        holder = port_holder(LAB_PORT)
        if holder:
            raise held_error(LAB, LAB_PORT, holder)
        paths.state_dir().mkdir(parents=True, exist_ok=True)
        copied = present.prepare(fresh=fresh)
        progress(f"presenting a copy of the chapters in {display(present.present_dir())}"
                 + (f" (copied: {', '.join(copied)})" if copied else ""))
        token = secrets.token_hex(16)
        lab_token_file().write_text(token)
        lab_token_file().chmod(0o600)
        argv = present.lab_command(present.present_dir(), HOST, LAB_PORT, open_browser=open_browser)
        if not Path(argv[0]).exists():
            raise StackError(f"JupyterLab is not installed in .venv: {SETUP_HINT}")
        settings = paths.state_dir() / "jupyterlab" / "settings"
        process = start(LAB, Launch(argv, present.lab_environment(token, settings)))
        progress(f"{LAB.name:<13} starting (log {display(log_file(LAB.name))})")
    wait_component(LAB, process, time.monotonic(), progress)
    return lab_url()
