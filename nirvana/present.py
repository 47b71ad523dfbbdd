"""Presenting: the copy of the chapters JupyterLab serves, and how JupyterLab is started for it.

JupyterLab (and jupyterlab_rise, which saves a notebook before it shows it as slides) writes to
the notebooks it opens: outputs, widget state, the current cell. Presenting from the checkout
would leave every ``.ipynb`` modified. So ``./kit present`` serves a copy under
``state/present/`` (git-ignored): ``notebooks/`` (the chapters, their slide styles ``rise.css``
and an empty ``<chapter>.css`` each, which the slideshow asks for) and ``assets/diagrams/`` (the
pictures the chapters link to, at the same relative path as in the checkout).

A chapter is copied when the copy is missing or when the checkout's chapter changed since it was
copied (a ``git pull``); otherwise the copy, with whatever the presenter saved into it while
rehearsing, is kept. ``./kit present --fresh`` copies every chapter again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import paths

COPIED = ("rise.css",)            # notebooks/ files copied beside the chapters, always
PICTURES = Path("assets") / "diagrams"
SERVER_CONFIG = paths.ROOT / "assets" / "jupyter" / "jupyter_server_config.py"   # a patch at the edge: see there
MANIFEST = ".copied-from.json"    # {chapter file name: sha256 of the checkout's file when copied}


def present_dir() -> Path:
    """The folder JupyterLab serves when presenting: ``<state>/present``."""
    return paths.state_dir() / "present"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(root: Path | None = None, *, fresh: bool = False) -> list[str]:
    """Copy the chapters, their slide styles and pictures under ``root`` (default :func:`present_dir`).

    Returns the chapter file names copied this time (a kept copy is not listed). ``fresh``
    copies every chapter again, dropping what was saved into the copies.
    """
    root = root or present_dir()
    target = root / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    copied = []
    for source in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        digest = _digest(source)
        copy = target / source.name
        if fresh or not copy.exists() or manifest.get(source.name) != digest:
            shutil.copyfile(source, copy)
            manifest[source.name] = digest
            copied.append(source.name)
    for name in COPIED:
        if (paths.NOTEBOOKS / name).exists():
            shutil.copyfile(paths.NOTEBOOKS / name, target / name)
    for source in paths.NOTEBOOKS.glob("*.ipynb"):
        # jupyterlab_rise asks for <chapter>.css beside rise.css (a chapter's own slide styles):
        # answered, not a 404 in the slideshow's console; kept once there (the presenter's own)
        styles = target / f"{source.stem}.css"
        if not styles.exists():
            styles.write_text(f"/* {source.name}: no slide styles of its own; the kit's are in rise.css */\n")
    if (paths.ROOT / PICTURES).is_dir():
        shutil.copytree(paths.ROOT / PICTURES, root / PICTURES, dirs_exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return copied


# JupyterLab settings the kit starts with (each file written only while missing, so what the
# presenter changes later is kept): no news prompt (it would cover a slide and fetch from the
# internet); a chapter opened starts its kernel (the kit's python3) instead of asking which one;
# no autosave (it wrote a rehearsal's outputs into the served copy every 2 minutes, and a reopened
# slideshow showed them without their panels): the presenter saves on purpose (Ctrl+S).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
}


def lab_settings(settings: Path) -> Path:
    """Write :data:`LAB_SETTINGS` into JupyterLab's user settings folder ``settings``; returns it."""
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))
    return settings


def lab_command(root: Path, host: str, port: int, *, open_browser: bool) -> list[str]:
    """The ``jupyter lab`` command line that serves ``root`` on ``host:port`` (loopback, no prompt)."""
    argv = [str(paths.ROOT / ".venv" / "bin" / "jupyter"), "lab", f"--notebook-dir={root}",
            f"--ServerApp.ip={host}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.open_browser={open_browser}", f"--config={SERVER_CONFIG}",
            # on stage there may be no internet, and no prompt should cover a slide
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # containers and CI machines run as root; Jupyter refuses without this
        argv.append("--allow-root")
    return argv


def lab_environment(token: str, settings: Path) -> dict[str, str]:
    """The environment JupyterLab runs with: its token, the kit's settings and workspaces folders."""
    return {"JUPYTER_TOKEN": token, "JUPYTERLAB_SETTINGS_DIR": str(lab_settings(settings)),
            "JUPYTERLAB_WORKSPACES_DIR": str(settings.parent / "workspaces")}


__all__ = ["present_dir", "prepare", "lab_settings", "lab_command", "lab_environment"]
