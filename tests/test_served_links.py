"""What a chapter links to or loads is served beside it: the copy ``./kit present`` serves
(``nirvana.present.prepare``) is walked, not the checkout, since JupyterLab shows the copy.

Every relative link in a chapter's Markdown (``[text](GLOSSARY.md#anchor)``, a picture, the next
chapter) must name a file of the served copy, and its anchor a heading of that file; every
``%load`` path must name a file beside the chapter (JupyterLab runs a chapter's kernel in the
chapter's folder). The same files are then asked of a real Jupyter server started on the copy.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from nirvana import endpoints, present
from nirvana._wait import poll
from nirvana.paths import NOTEBOOKS
from nirvana.launcher import free_port

CHAPTERS = sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LOAD = re.compile(r"%load\s+([^\s`)]+)")


def _cells(path: Path, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if cell["cell_type"] == kind]


def _slug(heading: str) -> str:
    """The anchor JupyterLab (and GitHub) give a Markdown heading: lower case, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    if path.suffix == ".md":
        texts = [path.read_text(encoding="utf-8")]
    elif path.suffix == ".ipynb":
        texts = _cells(path, "markdown")
    else:
        return set()
    return {_slug(h) for text in texts for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)}


def references(served: Path, chapter: str) -> list[tuple[str, Path, str]]:
    """(what the chapter wrote, the file it names in the served copy, anchor or "") per reference."""
    path = served / "notebooks" / chapter
    found = []
    for text in _cells(path, "markdown"):
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):   # http:, mailto:: not ours
                continue
            file, _, anchor = target.partition("#")
            found.append((target, path if not file else path.parent / urllib.parse.unquote(file), anchor))
        for target in LOAD.findall(text):
            found.append((f"%load {target}", path.parent / target, ""))
    for text in _cells(path, "code"):
        for target in LOAD.findall(text):
            found.append((f"%load {target}", path.parent / target, ""))
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("present")
    present.prepare(root)
    return root


def test_every_chapter_references_something(served):
    # the walk itself sees the links (a regex gone wrong would pass every chapter silently)
    for chapter in CHAPTERS:
        kinds = {text.split()[0] if text.startswith("%load") else Path(text.partition("#")[0]).suffix
                 for text, _, _ in references(served, chapter)}
        assert "%load" in kinds and ".md" in kinds, f"{chapter}: no glossary link or %load found: {kinds}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_link_and_load_of_a_chapter_is_served_beside_it(served, chapter):
    missing = []
    for text, target, anchor in references(served, chapter):
        resolved = target.resolve()
        if not resolved.is_relative_to(served.resolve()):
            missing.append(f"{text}: outside the served folder")
        elif not resolved.is_file():
            missing.append(f"{text}: not served ({resolved.relative_to(served.resolve())} missing)")
        elif anchor and anchor not in _anchors(resolved):
            missing.append(f"{text}: no heading #{anchor} in {resolved.name}")
    assert missing == [], f"{chapter} names what ./kit present does not serve: {missing}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(served):
    """A Jupyter server on the served copy, as ``./kit present`` starts it (loopback, a token)."""
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, **present.lab_environment(token, served / "settings")}
    with (served / "lab.log").open("wb") as log:
        process = subprocess.Popen(present.lab_command(served, endpoints.HOST, port, open_browser=False),
                                   env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    base = f"http://{endpoints.HOST}:{port}"
    try:
        poll(lambda: _answers(f"{base}/api/status?token={token}"), bool, timeout=60,
             what="the Jupyter server on the served copy to answer", progress=lambda _line: None)
        yield base, token
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def test_the_jupyter_server_on_the_served_copy_answers_every_link_and_load(served, server):
    base, token = server
    failed = []
    for chapter in CHAPTERS:
        for text, target, _ in references(served, chapter):
            relative = target.resolve().relative_to(served.resolve()).as_posix()
            url = f"{base}/api/contents/{urllib.parse.quote(relative)}?content=0&token={token}"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            if status != 200:
                failed.append(f"{chapter}: {text} -> {status}")
    assert failed == []
