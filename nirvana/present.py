"""Presenting: the copy of the chapters JupyterLab serves, and how JupyterLab is started for it.

JupyterLab (and jupyterlab_rise, which saves a notebook before it shows it as slides) writes to
the notebooks it opens: outputs, widget state, the current cell. Presenting from the checkout
would leave every ``.ipynb`` modified. So ``./kit present`` serves a copy under
``state/present/`` (git-ignored): ``notebooks/`` (the chapters, their slide styles ``rise.css``
and an empty ``<chapter>.css`` each, which the slideshow asks for), ``assets/diagrams/``, and
every file a chapter links to or loads (:func:`references`: the glossary, the exercises'
``solutions/``, a picture), followed from file to file, at the same relative path as in the
checkout, so every link and ``%load`` of a chapter works in the copy as in the checkout.

A file is copied when the copy is missing or when the checkout's file changed since it was
copied (a ``git pull``); otherwise the copy, with whatever the presenter saved into it while
rehearsing, is kept. ``./kit present --fresh`` copies every file again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

from . import paths

COPIED = ("rise.css",)            # notebooks/ files copied beside the chapters, always
PICTURES = Path("assets") / "diagrams"
SERVER_CONFIG = paths.ROOT / "assets" / "jupyter" / "jupyter_server_config.py"   # a patch at the edge: see there
MANIFEST = ".copied-from.json"    # {file path under notebooks/: sha256 of the checkout's file when copied}
# what a chapter points at: a Markdown link or picture ``[text](target "title")``, an HTML
# ``src="..."``/``href="..."``, and the magics that read a file beside the notebook
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
_MAGIC = re.compile(r"%(?:load|run)\s+([^\s`)'\"]+)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)   # http:, mailto:, data:: not a file of ours


def present_dir() -> Path:
    """The folder JupyterLab serves when presenting: ``<state>/present``."""
    return paths.state_dir() / "present"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def references(path: Path) -> list[str]:
    """The relative paths a notebook or Markdown file at ``path`` points at, as written in it.

    Links and pictures of a notebook's Markdown cells (of the whole file for ``.md``), and the
    ``%load``/``%run`` paths of any cell (a kernel started on a chapter runs in its folder, so
    those are relative to it too). An anchor (``#...``) and a query are cut off; addresses with a
    scheme (``https:``) and bare anchors are not files, so not listed.
    """
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        linked = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        loaded = ["".join(c["source"]) for c in cells]
    elif path.suffix == ".md":
        linked = loaded = [path.read_text(encoding="utf-8")]
    else:
        return []
    found = [a or b for text in linked for a, b in _LINK.findall(text)]
    found += [target for text in loaded for target in _MAGIC.findall(text)]
    targets = []
    for target in found:
        target = urllib.parse.unquote(target.split("#")[0].split("?")[0])
        if target and not _SCHEME.match(target) and target not in targets:
            targets.append(target)
    return targets


def served_files() -> list[Path]:
    """Every file of the checkout ``./kit present`` serves under ``notebooks/``, chapters first.

    The chapters, then what they reference (:func:`references`), followed from file to file (the
    glossary's links, the solutions notebook's ``%run``), kept only when it exists inside the
    checkout's ``notebooks/`` folder. A reference above it (``../assets/diagrams/...``) is served by
    copying :data:`PICTURES` whole; one that names no file is what ``tests/test_served_links.py``
    reports.
    """
    chapters = sorted(paths.NOTEBOOKS.glob("*.ipynb"))
    files, todo = list(chapters), list(chapters)
    while todo:
        source = todo.pop(0)
        for target in references(source):
            linked = (source.parent / target).resolve()
            if linked.is_file() and linked.is_relative_to(paths.NOTEBOOKS) and linked not in files:
                files.append(linked)
                todo.append(linked)
    return files


def prepare(root: Path | None = None, *, fresh: bool = False) -> list[str]:
    """Copy the chapters, what they link to or load (:func:`served_files`), their slide styles and
    pictures under ``root`` (default :func:`present_dir`).

    Returns the paths under ``notebooks/`` copied this time, chapters first (a kept copy is not
    listed). ``fresh`` copies every file again, dropping what was saved into the copies.
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
    for source in served_files():
        name = source.relative_to(paths.NOTEBOOKS).as_posix()
        digest = _digest(source)
        copy = target / name
        if fresh or not copy.exists() or manifest.get(name) != digest:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
            manifest[name] = digest
            copied.append(name)
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
