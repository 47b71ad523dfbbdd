"""Metrics a run leaves behind, removed: the made-up service names of the tests and chapter 08.

A service with a made-up name (``nirvana.testing.World.service_name``: ``t1a2b3c_orders``) counts
under that name. statsd sends every counter and timer it has seen at each flush (0 when idle:
statsd's ``deleteIdleStats`` is off), so carbon keeps writing them and Graphite's tree fills with
names nobody will look at again, even after their whisper files are deleted, until statsd
restarts. :func:`prune` removes them: statsd forgets them (its admin commands ``delcounters``,
``deltimers``, ``delgauges``, statsd 0.9.0's docs/admin_interface.md), then, once carbon has
written statsd's last flush, their whisper files of the native stack go.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable

from . import endpoints
from .stack.carbon import whisper_dir

KINDS = ("counters", "timers", "gauges")
SETTLE = 1.5        # seconds: statsd's last flush (1 s) reaches carbon's files
TIMEOUT = 5.0       # seconds for one admin command
# a key of statsd's answer (Node's util.inspect of an object): 'statsd.bad_lines_seen': 0, orders_new_order_ok: 1
_KEY = re.compile(r"(?:^|[{,])\s*'?([\w.\-]+)'?\s*:", re.M)


def _admin(command: str) -> str:
    """One statsd admin command on 127.0.0.1 (STATSD_ADMIN_PORT); its answer up to ``END``."""
    with socket.create_connection((endpoints.HOST, endpoints.STATSD_ADMIN_PORT), timeout=TIMEOUT) as conn:
        conn.sendall(command.encode() + b"\n")
        answer = b""
        while not answer.rstrip().endswith(b"END"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace")


def statsd_names(kind: str) -> list[str]:
    """The names statsd holds of ``kind`` (``counters``, ``timers`` or ``gauges``)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose from {', '.join(KINDS)}")
    return _KEY.findall(_admin(kind).rsplit("END", 1)[0])


def _owned(name: str, services: list[str]) -> bool:
    return any(name.startswith(f"{service}_") for service in services)


def _files(services: list[str]) -> list[Path]:
    root = whisper_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in (root / "stats_counts", root / "stats", root / "stats" / "timers", root / "stats" / "gauges"):
        if folder.is_dir():
            found += [path for path in folder.iterdir() if _owned(path.name, services)]
    return found


def prune(services: Iterable[str], *, progress=lambda _line: None) -> int:
    """Forget the metrics of ``services`` (service names, as SERVICE_NAME: every metric named
    ``<service>_…``) in statsd and delete their whisper files; returns how many files and folders
    went. Never give it the talk's ``orders`` or ``notify`` unless their history should go too.
    Raises OSError when statsd's admin port does not answer."""
    services = sorted({service for service in services if service})
    if not services:
        return 0
    forgotten = 0
    for kind in KINDS:
        names = [name for name in statsd_names(kind) if _owned(name, services)]
        for start in range(0, len(names), 50):   # one line per command, kept short
            forgotten += _admin(f"del{kind} {' '.join(names[start:start + 50])}").count("deleted: ")
    time.sleep(SETTLE)   # statsd's flush under way when it forgot them reaches the files
    removed = 0
    for _ in range(3):   # a point carbon still held recreates a file: delete again
        files = _files(services)
        if not files:
            break
        for path in files:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        removed += len(files)
        time.sleep(1.0)
    progress(f"graphite      pruned {forgotten} statsd metrics and {removed} whisper files or folders "
             f"of {len(services)} made-up services")
    return removed


__all__ = ["prune", "statsd_names", "KINDS"]
