"""The shape of the code: small modules, imports at the top, no cycles, svc never imports nirvana.

Read from the source with ``ast`` (nothing is imported), so a failure names the file and line.
"""

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nirvana", "svc")
MAX_LINES = 400   # a module past this does more than one job (issue 11; dramatiq's are 40-250)


def modules(package: str) -> dict[str, Path]:
    """Every module of a package by dotted name (generated protobuf code excluded)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "_pb2" in path.name:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


ALL = {name: path for package in PACKAGES for name, path in modules(package).items()}


def imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for each import of a kit module."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                # ``from . import x`` names module x when there is one, else an attribute of ``.``
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in ALL else module
                           for alias in child.names]
            for target in targets:
                if target.split(".")[0] in PACKAGES:
                    found.append((target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def resolve(target: str) -> str | None:
    """The kit module an import names (``from . import x`` may name a module or an attribute)."""
    while target and target not in ALL:
        target = target.rpartition(".")[0]
    return target or None


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_is_over_400_lines(name):
    lines = len(ALL[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{ALL[name].relative_to(ROOT)} has {lines} lines: split it by job"


def test_svc_never_imports_nirvana():
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} imports {target}"
           for name in ALL if name.startswith("svc")
           for target, line, _ in imports(name, ALL[name]) if target.startswith("nirvana")]
    assert bad == []


def test_nirvana_imports_the_kit_at_the_top_of_its_modules():
    # an import inside a function hides a dependency (and usually a cycle it works around)
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} imports {target} inside a function"
           for name in ALL if name.startswith("nirvana")
           for target, line, inside in imports(name, ALL[name]) if inside]
    assert bad == []


def test_no_import_cycles():
    graph = {name: {resolve(t) for t, _, _ in imports(name, path)} - {None, name} for name, path in ALL.items()}
    # a package imports its own submodules to re-export them; that edge is not a dependency back
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []


def test_every_error_the_kit_defines_is_under_one_root():
    from nirvana.errors import KitError

    loose = []
    for name in ALL:
        if not name.startswith("nirvana") or name == "nirvana.__main__":
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name
                    and not issubclass(value, KitError)):
                loose.append(f"{name}.{attr}")
    assert loose == []


def test_notebooks_import_the_kit_from_one_namespace():
    # notebooks import from `nirvana` (and plotting/display libraries), never from svc or a layer
    # under nirvana: the names they use are the ones nirvana.__all__ documents
    import nirvana

    bad, used = [], set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, ast.ImportFrom):
                    if node.module != "nirvana" and (node.module or "").split(".")[0] in PACKAGES:
                        bad.append(f"{path.name}: from {node.module} import ...")
                    elif node.module == "nirvana":
                        used |= {alias.name for alias in node.names}
                elif isinstance(node, ast.Import):
                    bad += [f"{path.name}: import {a.name}" for a in node.names
                            if a.name.split(".")[0] in PACKAGES and a.name != "nirvana"]
    assert bad == []
    assert used <= set(nirvana.__all__)
    for name in nirvana.__all__:
        assert getattr(nirvana, name, None) is not None or (ROOT / "nirvana" / f"{name}.py").exists(), name


# -- one launcher (issue 22) ---------------------------------------------------------------------

LAUNCHERS = {"nirvana.launcher"}   # the one place a long-lived process is started
STARTS_ITS_OWN = {
    # the guard of what the launcher starts: it needs the owner's pipe as its stdin (end-of-file is
    # the owner's death) and must not depend on the launcher it guards (it runs with python -I)
    "nirvana.watchdog": "the kernel-death watchdog",
}
ONE_SHOT = {
    # commands that run to their end within a deadline (timeout=), never a process the kit keeps
    "nirvana.cuts": "rabbitmqctl list_connections / close_connection / stop_app / start_app",
    "nirvana.replay": "rabbitmqctl list_queues",
    "nirvana.stack.members": "rabbitmqctl against a cluster's node",
    "nirvana.stack.rabbitmq": "rabbitmqctl list_vhosts (may this user run it?)",
    "nirvana.own_rabbitmq": "rabbitmqctl against a throwaway node",
    "nirvana.testing": "rabbitmqctl for a test's world (policies, users, connections)",
}
LONG_LIVED = {"subprocess.Popen", "os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.posix_spawnp",
              "os.spawnv", "os.spawnve", "os.spawnvp", "os.execv", "os.execve", "os.execvp", "pty.fork",
              "multiprocessing.Process", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"}
RUN_TO_END = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output"}


def process_starts(path: Path) -> list[tuple[str, int, ast.Call]]:
    """(``module.function``, line, the call) for each call that starts a process, as written:
    ``subprocess.Popen(...)`` or a name imported from its module (``from subprocess import Popen``)."""
    tree = ast.parse(path.read_text(), str(path))
    imported = {alias.asname or alias.name: f"{node.module}.{alias.name}" for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, name = node.func, None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
        elif isinstance(func, ast.Name):
            name = imported.get(func.id)
        if name in LONG_LIVED | RUN_TO_END:
            found.append((name, node.lineno, node))
    return found


def test_no_process_is_started_outside_the_launcher():
    # every process the kit keeps running is started by nirvana.launcher: its log, start record,
    # readiness wait and group stop are written once (a start elsewhere is one more copy of them)
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} {call}" for name in ALL
           if name not in LAUNCHERS and name not in STARTS_ITS_OWN
           for call, line, _node in process_starts(ALL[name]) if call in LONG_LIVED]
    assert bad == []


def test_one_shot_commands_are_named_and_have_a_deadline():
    bad = []
    for name in ALL:
        for call, line, node in process_starts(ALL[name]):
            if call not in RUN_TO_END:
                continue
            where = f"{ALL[name].relative_to(ROOT)}:{line} {call}"
            if name not in ONE_SHOT:
                bad.append(f"{where}: not among the one-shot commands this test names")
            elif not any(keyword.arg == "timeout" for keyword in node.keywords):
                bad.append(f"{where}: no timeout=")
    assert bad == []


MOVED_OUT_OF_SVC = ("watchdog", "own_etcd", "own_rabbitmq", "testing")


def test_svc_is_the_service_and_its_stand_ins_only():
    # the kit's infrastructure (never run by `python -m svc`) lives in nirvana; svc never imports it
    assert [f"svc.{name}" for name in MOVED_OUT_OF_SVC if f"svc.{name}" in ALL] == []
    bad = [f"{ALL[name].relative_to(ROOT)}:{line} imports {target}"
           for name in ALL if name.startswith("svc")
           for target, line, _ in imports(name, ALL[name])
           if target.split(".")[-1] in MOVED_OUT_OF_SVC or target.startswith("nirvana")]
    assert bad == []


# The edges: svc.amqp (RabbitMQ, pika) and svc.etcd (etcd, gRPC), with the private layers only
# they use (svc._pika: svc.amqp's lowest layer, which svc.topology needs below it; svc._etcdchannel,
# svc._etcdrpc). svc.examples is the talk's bare pika, shown as it is written without svc.
EDGES = ("svc.amqp", "svc._pika", "svc.etcd", "svc._etcdchannel", "svc._etcdrpc")
BARE = ("svc.examples",)
OUTSIDE = sorted(path for folder in ("tests", "bench") for path in (ROOT / folder).glob("*.py"))


def _within(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_no_private_svc_module_is_imported_from_outside_svc():
    # svc's public edges are svc.amqp and svc.etcd: nirvana, the tests and the benchmarks use those
    found = [(f"{ALL[name].relative_to(ROOT)}", target, line) for name in ALL if not name.startswith("svc")
             for target, line, _ in imports(name, ALL[name])]
    found += [(f"{path.relative_to(ROOT)}", target, line) for path in OUTSIDE
              for target, line, _ in imports(f"{path.parent.name}.{path.stem}", path)]
    bad = [f"{where}:{line} imports {target}" for where, target, line in found
           if target.startswith("svc.") and any(part.startswith("_") and not part.startswith("__")
                                                for part in (resolve(target) or target).split(".")[1:])]
    assert bad == []


LIBRARY_MODULES = ("pika.exceptions", "grpc", "etcd3.exceptions", "pika.adapters.utils.connection_workflow")
LIBRARY_ERRORS = ("pika.exceptions.", "grpc.RpcError", "grpc.FutureTimeoutError", "etcd3.exceptions.")


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


@pytest.mark.parametrize("name", sorted(name for name in ALL if not _within(name, EDGES + BARE)))
def test_no_library_exception_is_named_outside_the_edges(name):
    # pika's and gRPC's errors are translated into svc.errors at the edges (svc.amqp.translate /
    # translated / passive_declare / closed_by_broker; svc.etcd's DedupUnavailable, EtcdRefused):
    # the rest of svc and the kit catch svc's errors (or svc.amqp.BROKER_ERRORS, the edge's own name)
    path = ALL[name]
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                    if _within(a.name, LIBRARY_MODULES)]
        elif isinstance(node, ast.ImportFrom) and _within(node.module or "", LIBRARY_MODULES):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Attribute) and _dotted(node).startswith(LIBRARY_ERRORS) \
                and not isinstance(getattr(node, "parent", None), ast.Attribute):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} names {_dotted(node)}")
    assert bad == []


def test_tests_set_the_kits_settings_the_public_way():
    # nirvana.settings.use (through conftest's use_settings) or reload, never its private _current
    bad = [f"{path.relative_to(ROOT)}:{number}" for path in OUTSIDE if path.name != "test_layout.py"
           for number, line in enumerate(path.read_text().splitlines(), 1)
           if '"_current"' in line or "settings._current" in line]
    assert bad == []


# The I/O loops that are a consumer's own (the hot path, not a wait) and the one wait helper.
PUMPS = {"svc.amqp", "svc.consumer", "svc.replay"}


def test_a_blocking_connection_is_waited_on_through_svc_amqp_pump_until():
    # a hand-written `while ...: connection.process_data_events(...)` is one more wait without a
    # name or a shared deadline: outside a consumer's own loop, svc.amqp.pump_until is the one
    bad = [f"{ALL[name].relative_to(ROOT)}:{node.lineno}" for name in ALL if name not in PUMPS
           for node in ast.walk(ast.parse(ALL[name].read_text()))
           if isinstance(node, ast.Attribute) and node.attr == "process_data_events"]
    assert bad == []
