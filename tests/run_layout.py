"""How a test run is laid out, for every run (tests, notebooks, or both): the hooks the rootdir's
conftest.py registers.

Under pytest-xdist (``./kit test`` passes ``-n 5 --dist loadgroup``) each worker runs in a network
namespace of its own with a stack of its own, and the tests that must share a worker are grouped:
the cells of one notebook (their kernel holds what the cells before made), the tests of a module
with a module-scoped fixture, the cluster tests in their lanes. These hooks are here, not in
tests/conftest.py, because pytest loads a conftest.py only for the folders of what it collects: a
run of only notebooks (``./kit test notebooks/02_recovery.ipynb``) never loaded tests/conftest.py,
so its cells were dealt to three workers sharing one stack and every cell after the first failed
(NameError). tests/conftest.py keeps the fixtures.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKER_PYTHON = Path(__file__).with_name("private-stack-python")   # each pytest-xdist worker's Python
PRIVATE_STACK = "NIRVANA_PRIVATE_STACK"   # set in an xdist worker's environment: its stack is its own
CLUSTER_LANES = 2                 # clusters of three at once under pytest-xdist (three at once overran 2 cores)
STACK_WATCHDOG: list = []        # a worker's nirvana.watchdog.Watchdog over its own stack's start records
STACK_DEADLINE = 180.0            # seconds for a worker's `python -m nirvana up` (or down) on a loaded machine


def pytest_configure(config):
    """``pytest -n N`` (pytest-xdist; ``./kit test`` passes it): every worker runs in a network
    namespace of its own (tests/private-stack-python) with a stack of its own, brought up here before
    its first test and down after its last, its state under ``state/workers/<gwN>``; nothing of the
    machine's services is seen or touched. Serially (``-n 0``) the tests use the stack on this machine.

    Raises pytest.UsageError (exit status 4) when workers are asked for and no network namespace
    can be made here, with the way to run serially."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if os.environ.get(PRIVATE_STACK):
            private_stack_up(worker["workerid"])
        return
    tx = getattr(config.option, "tx", None) or []
    if not tx or getattr(config.option, "dist", "no") == "no" or any(spec != "popen" for spec in tx):
        return   # serial, or workers of the caller's own choosing (--tx)
    probe = subprocess.run([str(WORKER_PYTHON), "-c", "pass"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, PRIVATE_STACK: ""})
    if probe.returncode != 0:
        raise pytest.UsageError(f"pytest -n {len(tx)} runs each worker in a network namespace of its own, and "
                                f"none can be made here ({probe.stderr.strip()}): run the tests serially "
                                "against the stack on this machine with `./kit test -n 0`")
    config.option.tx = [f"popen//python={WORKER_PYTHON}//env:{PRIVATE_STACK}=1"] * len(tx)


def private_stack_up(worker: str) -> None:
    """Bring up a stack of this worker's own (inside its network namespace) under a fresh state folder,
    after stopping whatever an earlier run of the same worker left there. pytest.exit on a failure."""
    state = (Path(os.environ.get("NIRVANA_STATE") or Path(__file__).parents[1] / "state") / "workers" / worker)
    os.environ["NIRVANA_STATE"] = str(state)
    if state.exists():
        kit_command("down")   # an earlier run's leftovers (their processes outlive a lost namespace)
        shutil.rmtree(state)
    kit_command("up")
    # a worker that dies without its unconfigure (its controller killed, a SIGKILL) leaves no stack:
    # the watchdog stops the groups of the stack's start records when this process ends, however
    from nirvana.watchdog import Watchdog

    STACK_WATCHDOG.append(Watchdog())
    STACK_WATCHDOG[0].records(state)


def kit_command(command: str) -> None:
    """``python -m nirvana COMMAND`` for this worker's own stack; pytest.exit naming its output on a failure."""
    run = subprocess.run([sys.executable, "-m", "nirvana", command], capture_output=True, text=True,
                         timeout=STACK_DEADLINE, env={**os.environ, "CI": ""})
    if run.returncode != 0:
        pytest.exit(f"this worker's own stack: `python -m nirvana {command}` failed (exit {run.returncode}):\n"
                    f"{run.stdout[-3000:]}{run.stderr[-2000:]}", returncode=3)


def pytest_unconfigure(config):
    """A worker with a stack of its own stops it (every component, service and JupyterLab of its state)."""
    if hasattr(config, "workerinput") and os.environ.get(PRIVATE_STACK):
        kit_command("down")
        for watchdog in STACK_WATCHDOG:
            watchdog.close()   # the stack is down: dismissed, it stops nothing


@pytest.hookimpl(tryfirst=True)   # before xdist's own, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Tests marked ``stack`` stop or restart components: run them last (after the notebooks too),
    so nothing else sees the stack go down; each leaves the stack up.

    Under pytest-xdist (``--dist loadgroup``; each worker's stack is its own, so ``stack`` tests need
    no order there) tests that must share a worker form groups: the cells of one notebook, the tests
    of a module with a module-scoped fixture (a JupyterLab, a browser), and the tests marked
    ``cluster``, dealt to CLUSTER_LANES groups (two clusters of three at a time: three at once
    overran 2 cores): each test alone, or the tests of a module that share one cluster (a
    module-scoped fixture) together, in one lane. The longest work starts first, so that the
    workers end together (longest-processing-time-first): clusters, then groups, then the tests
    marked ``slow`` (15 s or more), then the rest, each going to whichever worker is free. (A
    28 s test dealt last, in file order, ended one worker 28 s after the three others: 491 s on
    4 workers.)"""
    if not (hasattr(config, "workerinput") or getattr(config.option, "tx", None)):
        items.sort(key=lambda item: item.get_closest_marker("stack") is not None)
        return
    rank, lanes = {}, {}
    for item in items:
        group = share_group(item)
        if group and group.startswith("clusters"):   # a lane of its own (or of its module's), in turn
            key = item.nodeid if group == "clusters" else group
            group = lanes.setdefault(key, f"clusters-{len(lanes) % CLUSTER_LANES}")
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
        rank[item.nodeid] = work_rank(group, item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: rank[item.nodeid])


def work_rank(group: str | None, slow: bool) -> int:
    """Where a test starts under pytest-xdist, longest work first: 0 a cluster lane, 1 another group
    (a notebook's cells, a module sharing a fixture), 2 a test alone marked ``slow``, 3 the rest."""
    if group:
        return 0 if group.startswith("clusters") else 1
    return 2 if slow else 3


def share_group(item) -> str | None:
    """The worker group ``item`` must run in under pytest-xdist ("clusters": one of the cluster
    lanes; "clusters:<module>": one lane for every such test of the module), or None (any worker)."""
    path = item.nodeid.split("::")[0]
    if not isinstance(item, pytest.Function):
        return path   # a notebook's cell (nbval): its kernel holds what the cells before it made
    fixtures = item._fixtureinfo.name2fixturedefs.values()
    shared = any(d.scope in ("module", "class", "package") for defs in fixtures for d in defs)
    if item.get_closest_marker("cluster"):
        return f"clusters:{path}" if shared else "clusters"
    return path if shared else None
