"""``pytest -n N`` (``./kit test`` runs 5 workers): each worker in a network namespace of its own
with a stack of its own (tests/run_layout.py, tests/private-stack-python); a notebook's cells stay on
one worker, the ``cluster`` tests in two lanes; nothing is left running afterwards."""

import contextlib
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from nirvana import paths
from nirvana.testing import wait_for

WORKERS = 2
DEADLINE = 400   # seconds: two stacks up and down and one chapter, on a loaded 2-core machine


@pytest.mark.slow
def test_workers_have_stacks_of_their_own_notebook_cells_one_worker_and_nothing_is_left(tmp_path):
    # Given the probe tests and chapter 00 (whose later cells read what its first one made)
    probe = tmp_path / "probe.jsonl"
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "PYTEST_ADDOPTS", "NIRVANA_PRIVATE_STACK") and not k.startswith("PYTEST_XDIST")}
    env.update(NIRVANA_PARALLEL_PROBE=str(probe), NIRVANA_STATE=str(state))
    # When pytest runs them on two workers, as ./kit test does
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-n", str(WORKERS), "--dist", "loadgroup",
         "--nbval", "--nbval-current-env", "--nbval-sanitize-with", "notebooks/sanitize.cfg",
         "-k", "not hold", "tests/parallel_probe.py", "notebooks/00_setup.ipynb"],
        cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE)
    # I expect every test and cell to pass
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " failed" not in run.stdout and " passed" in run.stdout, run.stdout[-2000:]
    rows = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(rows) == 6, rows
    # each worker brought up a stack of its own under NIRVANA_STATE/workers/<gwN> (which worker runs
    # which test is xdist's choice: both may not run a probe), in a namespace that is not this test's
    workers = {f"gw{n}": state / "workers" / f"gw{n}" for n in range(WORKERS)}
    assert all((folder / "logs" / "rabbitmq.log").is_file() for folder in workers.values()), list(state.rglob("*.log"))
    mine = os.readlink("/proc/self/ns/net")
    assert all(row["state"] == str(workers[row["worker"]]) and row["netns"] != mine for row in rows), rows
    netns = {row["worker"]: row["netns"] for row in rows}
    assert all(netns[row["worker"]] == row["netns"] for row in rows) and len(set(netns.values())) == len(netns), rows
    # where RabbitMQ, etcd and statsd answer, started by the kit there
    assert all(len(row["answering"]) == 3 and row["rabbitmq"] == ["started by kit"] for row in rows), rows
    # each notebook cell in its notebook's group (one worker, in order), the two cluster tests dealt
    # to the two cluster lanes (at most two clusters of three at once), the other tests in none
    passed = [line.removeprefix("PASSED ") for line in run.stdout.splitlines() if line.startswith("PASSED ")]
    assert all(test.endswith("@notebooks/00_setup.ipynb") for test in passed if ".ipynb::" in test), passed
    assert sorted(test.split("@")[1] for test in passed if "cluster_at_a_time" in test) == ["clusters-0", "clusters-1"]
    assert all("@" not in test for test in passed if "test_anywhere" in test), passed
    # and afterwards no process of either worker's stack still runs
    assert running_from(state) == []


def test_a_run_killed_mid_test_leaves_no_stack_running(tmp_path):
    # Given a run on one worker whose test holds it, once the worker's stack is up
    probe, state = tmp_path / "probe.jsonl", tmp_path / "state"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "PYTEST_ADDOPTS", "NIRVANA_PRIVATE_STACK") and not k.startswith("PYTEST_XDIST")}
    env.update(NIRVANA_PARALLEL_PROBE=str(probe), NIRVANA_STATE=str(state))
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1",
                            "tests/parallel_probe.py::test_hold"], cwd=paths.ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(probe.exists, "the held test to start on its worker's stack", timeout=DEADLINE)
        assert running_from(state), "the worker's stack is not running"
        # When the run is SIGKILLed, controller and worker (no teardown runs)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        # I expect the worker's stack stopped all the same (its watchdog), within its stop deadline
        wait_for(lambda: running_from(state) == [], "the killed worker's stack to stop", timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        (tmp_path / "probe.jsonl.end").touch()


def running_from(state) -> list:
    """(pid, argv) of every process whose command line or NIRVANA_STATE names the folder ``state``."""
    left = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if str(state) in " ".join(process.info["cmdline"] or []) or str(state) in process.environ().get("NIRVANA_STATE", ""):
                left.append((process.pid, process.info["cmdline"]))
        except psutil.Error:
            continue
    return left


def test_a_run_of_one_chapter_alone_keeps_its_cells_on_one_worker():
    # Given a run of one chapter and nothing of tests/ (`./kit test notebooks/00_setup.ipynb`): pytest
    # loads no tests/conftest.py for it. Seen: every cell after the first failed (NameError), dealt
    # to three workers. Two workers of the caller's own (--tx: no stacks of their own; they use this
    # test's stack) keep it cheap; the grouping is the same hook.
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "PYTEST_ADDOPTS", "NIRVANA_PRIVATE_STACK") and not k.startswith("PYTEST_XDIST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--tx", f"{WORKERS}*popen",
         "--dist", "loadgroup", "--nbval", "--nbval-current-env", "--nbval-sanitize-with", "notebooks/sanitize.cfg",
         "notebooks/00_setup.ipynb"],
        cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE)
    # I expect every cell passed, each in the chapter's group (one worker, in order)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = [line.removeprefix("PASSED ") for line in run.stdout.splitlines() if line.startswith("PASSED ")]
    assert passed and all(test.endswith("@notebooks/00_setup.ipynb") for test in passed), passed


def test_the_longest_work_starts_first():
    # Given the kinds of work a run deals out under pytest-xdist, in file order
    from run_layout import work_rank
    work = [("quick", None, False), ("a notebook's cells", "notebooks/01_consume_produce.ipynb", False),
            ("slow alone", None, True), ("a cluster lane", "clusters-0", False),
            ("a module's shared browser", "tests/test_browser.py", True)]
    # When they are ranked; I expect the clusters first, then groups, then slow tests alone, the rest last
    ranked = [name for name, *_ in sorted(work, key=lambda w: work_rank(w[1], w[2]))]
    assert ranked == ["a cluster lane", "a notebook's cells", "a module's shared browser", "slow alone", "quick"]
