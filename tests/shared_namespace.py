"""Tests of one module that share a module-scoped fixture (a cluster of three) run together in
ONE network namespace: one inner pytest of their ids (:func:`conftest.run_in_namespace`), where
the fixture is set up once for them all. Outside, each outer test checks that its own test ran
inside and passed, as :func:`conftest.in_own_namespace` does for a test alone: a skip, a failure,
an error (its teardown's included) or a missing testcase fails that outer test, and only it.

A module uses it as tests/test_cluster.py does::

    @pytest.fixture(scope="module")
    def shared(request, tmp_path_factory):
        if not inside():
            yield run_together(request, tmp_path_factory.mktemp("inside"), "shared")
            return
        ...   # inside: set up once, yield, tear down

    def test_x(request, shared):
        if not in_shared_namespace(request, shared):
            return
        ...
"""

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from conftest import INSIDE, plain_nodeid, run_in_namespace


@dataclass(frozen=True)
class Together:
    """One inner run of several tests: its exit status, the end of its output, and each test's
    outcome by name (``passed``, ``failed``, ``error``, ``skipped``; a module's test names are
    unique) with what the report says of it (the failure's message and traceback, the skip's reason)."""

    returncode: int
    output: str
    outcomes: dict[str, tuple[str, str]]

    def check(self, name: str) -> None:
        """Raises AssertionError unless test ``name`` ran inside and passed, in a run that ended as
        pytest's runs of tests do (exit 0 or 1: not interrupted, no internal or usage error)."""
        assert self.returncode in (0, 1), f"the run inside ended with exit {self.returncode}: {self.output}"
        outcome, says = self.outcomes.get(name, ("missing", ""))
        assert outcome == "passed", f"{name}: {outcome} inside, not passed:\n{says}\n{self.output}"


def inside() -> bool:
    """True in a run inside a namespace (conftest.run_in_namespace sets INSIDE), False outside."""
    return bool(os.environ.get(INSIDE))


def run_together(request, tmp_path: Path, fixture: str) -> Together:
    """Outside, from a module-scoped ``fixture``: run every test of ``request``'s module that this
    session runs and that asks for ``fixture``, at once, in one namespace of their own. Skips (fails
    in CI) when no namespace can be made here; raises subprocess.TimeoutExpired past RUN_TIMEOUT
    seconds a test, plus 60."""
    module = request.node.nodeid + "::"
    nodeids = [plain_nodeid(item) for item in request.session.items
               if item.nodeid.startswith(module) and fixture in getattr(item, "fixturenames", ())]
    returncode, output, report = run_in_namespace(request, tmp_path, nodeids)
    return Together(returncode, output, outcomes(report) if report.exists() else {})


def in_shared_namespace(request, together) -> bool:
    """True inside (run the body); outside, check this test's outcome in ``together`` (a
    :class:`Together`; AssertionError unless it passed inside) and return False: the body is done."""
    if inside():
        return True
    together.check(request.node.name)
    return False


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """A junit XML report (pytest's --junitxml) -> {test name: (its outcome, the end of what the
    report says of it)}; a test with more than one testcase (a teardown's error reported apart)
    takes the first that did not pass."""
    found: dict[str, tuple[str, str]] = {}
    words = {"failure": "failed", "error": "error", "skipped": "skipped"}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        child = next((child for child in case if child.tag in words), None)
        name = case.get("name", "")
        if found.get(name, ("passed",))[0] == "passed":
            found[name] = ("passed", "") if child is None else (
                words[child.tag], f"{child.get('message', '')}\n{(child.text or '')[-3000:]}")
    return found
