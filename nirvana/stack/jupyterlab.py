"""JupyterLab for ``./kit present``: not part of the stack, but started the same way (pid file,
log, own process group), so that ``down`` stops it too."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import requests

from .. import endpoints, paths
from ..errors import StackError
from .component import DOWN, HOST, SETUP_HINT, Component, Launch, Probe, Progress, tcp_open
from .ports import held_error, port_holder
from .running import display, kit_process, log_file, start, wait_healthy

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


def _lab_settings() -> Path:
    """JupyterLab's user settings for the kit, under state/: the news prompt answered "no" (it
    would cover a slide and fetch from the internet); anything the presenter changes is kept."""
    settings = paths.state_dir() / "jupyterlab" / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    if not notification.exists():
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}, indent=2))
    return settings


def lab(open_browser: bool = True, progress: Progress = print) -> str:
    """Start JupyterLab on notebooks/ in the background (once); returns its URL (token included).

    Raises StackError when its port is held by another program or it is not installed.
    """
    if probe().up:
        if kit_process(LAB.name) is None:
            progress(f"JupyterLab found running on port {LAB_PORT} (not the kit's); its URL has its own token")
            return f"http://{HOST}:{LAB_PORT}/lab"
        return lab_url()
    process = kit_process(LAB.name)
    if process is None:
        holder = port_holder(LAB_PORT)
        if holder:
            raise held_error(LAB, LAB_PORT, holder)
        paths.state_dir().mkdir(parents=True, exist_ok=True)
        paths.NOTEBOOKS.mkdir(exist_ok=True)  # git keeps no empty folder
        token = secrets.token_hex(16)
        lab_token_file().write_text(token)
        lab_token_file().chmod(0o600)
        argv = [str(paths.ROOT / ".venv" / "bin" / "jupyter"), "lab", f"--notebook-dir={paths.NOTEBOOKS}",
                f"--ServerApp.ip={HOST}", f"--ServerApp.port={LAB_PORT}", "--ServerApp.port_retries=0",
                f"--ServerApp.open_browser={open_browser}",
                # on stage there may be no internet, and no prompt should cover a slide
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:  # containers and CI machines run as root; Jupyter refuses without this
            argv.append("--allow-root")
        if not Path(argv[0]).exists():
            raise StackError(f"JupyterLab is not installed in .venv: {SETUP_HINT}")
        settings = _lab_settings()
        process = start(LAB, Launch(argv, {"JUPYTER_TOKEN": token, "JUPYTERLAB_SETTINGS_DIR": str(settings),
                                           "JUPYTERLAB_WORKSPACES_DIR": str(settings.parent / "workspaces")}))
        progress(f"{LAB.name:<13} starting (log {display(log_file(LAB.name))})")
    wait_healthy(LAB, process, time.monotonic(), progress)
    return lab_url()
