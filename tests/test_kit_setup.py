"""``./kit``'s set-up steps on a machine unlike this one: its functions run in bash (the script,
sourced, defines them and runs nothing) with a PATH of the machine's programs but some hidden or
replaced by shims (an old python3, a failing apt-get), and npm against a registry of the test's own
on 127.0.0.1, named only in a global npmrc as a machine's proxy or mirror would be."""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

from nirvana import paths

KIT = paths.ROOT / "kit"


def farm(tmp_path: Path, hide: tuple[str, ...] = (), shims: dict[str, str] | None = None) -> str:
    """A PATH folder of links to every program of /usr/bin and /bin but ``hide`` (names, or
    prefixes ending in "*"), and ``shims`` (name -> a bash script's body)."""
    folder = tmp_path / "bin"
    folder.mkdir()

    def hidden(name: str) -> bool:
        return any(name == h or (h.endswith("*") and name.startswith(h[:-1])) for h in hide)

    for system in ("/usr/bin", "/bin"):
        for program in sorted(os.listdir(system)):
            link = folder / program
            if not hidden(program) and not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.join(system, program))
    for name, body in (shims or {}).items():
        path = folder / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(0o755)
    return str(folder)


def kit(script: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``source ./kit`` then ``script`` in bash -e (as the kit runs), in the checkout."""
    return subprocess.run(["/bin/bash", "-c", f"source {KIT} && {script}"], cwd=paths.ROOT, env=env,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


class Registry(http.server.BaseHTTPRequestHandler):
    """A registry that knows no package: every GET is recorded and answered 404."""
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Registry.seen.append(self.path)
        body = b'{"error": "not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def registry():
    Registry.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", Registry.seen
    server.shutdown()
    server.server_close()


def test_npm_install_of_statsd_keeps_the_machines_global_npmrc(tmp_path, registry):
    # Given a machine whose global npmrc (npm's prefix here: NPM_CONFIG_PREFIX) names its registry
    # (as a proxy's CA file or a company mirror is set), and no statsd installed yet
    if not Path("/usr/bin/npm").exists():
        pytest.skip("npm is missing: sudo apt-get install -y npm")
    url, seen = registry
    machine = tmp_path / "machine-prefix"
    (machine / "etc").mkdir(parents=True)
    (machine / "etc" / "npmrc").write_text(f"registry={url}\nfetch-retries=0\n")
    tools = tmp_path / "tools"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "NPM_CONFIG_PREFIX": str(machine),
           "NPM_CONFIG_CACHE": str(tmp_path / "npm-cache"), "NPM_CONFIG_USERCONFIG": str(tmp_path / "npmrc")}
    # When the kit installs statsd
    run = kit(f'TOOLS={tools} STATSD_MAIN={tools}/statsd/node_modules/statsd/stats.js NATIVE=1 install_statsd', env)
    # I expect npm to have asked the machine's registry, and the kit to end with its own error line
    assert any("statsd" in path for path in seen), (seen, run.stderr[-2000:])
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("kit: error: npm could not install statsd"), run.stderr


def test_a_failing_apt_get_ends_with_a_kit_error_line(tmp_path):
    # Given a machine missing a package, where apt-get fails (no network, a broken source)
    path = farm(tmp_path, shims={"apt-get": "echo 'E: could not resolve deb.debian.org' >&2; exit 100",
                                 "sudo": 'shift; exec "$@"'})
    env = {"PATH": path, "HOME": str(tmp_path)}
    # When the kit installs the system packages
    run = kit('SYSTEM_NEEDS=("no-such-tool no-such-package ETCD_PORT"); NATIVE=1 install_system_packages', env)
    # I expect the script to end on a `kit: error:` line saying what failed and what to do
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("kit: error: apt-get update failed"), run.stderr


def test_an_unforeseen_failing_step_is_named_in_a_kit_error_line(tmp_path):
    # Given a step of the kit that fails without a message of its own (set -e would end the
    # script in silence), I expect a `kit: error:` line naming it
    run = kit("mkdir /proc/no-such-folder-of-the-kit 2>/dev/null", {"PATH": os.environ["PATH"]})
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == \
        "kit: error: this step failed (exit 1): mkdir /proc/no-such-folder-of-the-kit 2> /dev/null", run.stderr


@pytest.mark.parametrize("for_tests", [False, True])
def test_chromium_is_needed_for_the_tests_only(tmp_path, for_tests):
    # Given a machine without chromium, I expect `./kit setup` (presenting) not to ask for it and
    # `./kit test` (the browser tests drive it) to install it
    env = {"PATH": farm(tmp_path, hide=("chromium*",)), "HOME": str(tmp_path)}
    run = kit(f'SYSTEM_NEEDS=(); PY=/bin/true {"FOR_TESTS=1 " if for_tests else ""}missing_packages', env)
    assert run.returncode == 0, run.stderr
    assert ("chromium" in run.stdout.split()) == for_tests, run.stdout


OLD_PYTHON = """case "$*" in
    *"sys.version_info < (3, 11)"*) exit 1 ;;
    *'print("%d.%d"'*) echo 3.10 ;;
    *) echo "Python 3.10.12" ;;
esac"""


def test_python_older_than_3_11_gets_one_line_naming_what_to_install(tmp_path):
    # Given a machine whose newest Python is 3.10 (Ubuntu 22.04) and no .venv yet
    calls = tmp_path / "apt-get.calls"
    path = farm(tmp_path, hide=("python3*",), shims={"python3": OLD_PYTHON,
                                                     "apt-get": f'echo "$*" >> {calls}; exit 0'})
    env = {"PATH": path, "HOME": str(tmp_path)}
    # When the kit sets up
    run = kit(f'PY={tmp_path}/no-venv/bin/python SYSTEM_NEEDS=() install_system_packages && install_venv', env)
    # I expect one line naming what to install (deadsnakes, pyenv, uv), and no apt-get round
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kit: error: Python 3.11 or newer is needed (python3 here: 3.10)"), lines
    assert all(word in lines[0] for word in ("deadsnakes", "pyenv", "uv python install")), lines[0]
    assert not calls.exists(), calls.read_text()


def test_setup_warms_the_chapters_imports_and_matplotlibs_font_cache_once(tmp_path):
    # Given a new machine's empty matplotlib cache and a .venv not warmed yet
    cache, venv = tmp_path / "mpl", tmp_path / "venv"
    venv.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MPLCONFIGDIR": str(cache)}
    # When set-up warms the kernel's imports, twice
    first = kit(f"VENV={venv} warm_kernel", env, timeout=300)
    second = kit(f"VENV={venv} warm_kernel", env)
    # I expect matplotlib's font cache built the first time, and the second to do nothing
    assert first.returncode == 0, first.stderr
    assert list(cache.glob("fontlist-*.json")), list(cache.iterdir()) if cache.exists() else "no cache folder"
    assert "warming" in first.stdout and second.stdout == "" and second.returncode == 0, second.stdout


@pytest.mark.parametrize("given, paths_run", [
    ([], ["tests", "notebooks"]),
    (["-x", "-k", "stack"], ["tests", "notebooks"]),
    (["tests/test_stack.py", "-x"], ["tests/test_stack.py"]),
    (["notebooks/01_consume_produce.ipynb"], ["notebooks/01_consume_produce.ipynb"]),
])
def test_kit_test_runs_the_paths_it_is_given_else_every_test_and_chapter(tmp_path, given, paths_run):
    # Given a python that prints what pytest is asked to run (ruff passes)
    shim = tmp_path / "python"
    shim.write_text('#!/bin/bash\n[ "$2" = pytest ] && printf "%s\\n" "${@:3}"; exit 0\n')
    shim.chmod(0o755)
    # When `./kit test` runs its tests with those arguments
    run = kit(f"PY={shim} run_tests {' '.join(given)}", {"PATH": os.environ["PATH"]})
    assert run.returncode == 0, run.stderr
    # I expect only the paths given (the whole suite when none is), the notebooks' options always there
    asked = run.stdout.split()
    assert [a for a in asked if a in ("tests", "notebooks", *given) and not a.startswith("-") and a != "stack"] \
        == paths_run, asked
    assert "--nbval" in asked and asked[len(asked) - len(given):] == given, asked


@pytest.mark.parametrize("given, workers", [
    ([], "5"),                                   # where a network namespace can be made (root, or userns)
    (["-x", "tests/test_stack.py"], "5"),
    (["-n", "0"], "0"),                          # serially, on this machine's stack
    (["-n2", "-x"], "2"),
    (["--numprocesses=4", "-n", "1"], "1"),      # the last one counts, as for pytest
])
def test_kit_test_runs_five_workers_unless_told(given, workers):
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    if workers == "5" and subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        workers = "0"   # no network namespace for this user here: serially (the next test fakes that case)
    run = kit(f"test_workers {' '.join(given)}", {"PATH": os.environ["PATH"]})
    assert (run.returncode, run.stdout.strip()) == (0, workers), run.stderr


def test_kit_test_runs_serially_where_no_network_namespace_can_be_made(tmp_path):
    # Given an unshare that refuses (a kernel without user namespaces for this user)
    (tmp_path / "unshare").write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    (tmp_path / "unshare").chmod(0o755)
    run = kit("test_workers", {"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert (run.returncode, run.stdout.strip()) == (0, "0"), run.stderr
    # and NIRVANA_TEST_WORKERS chooses when no -n is given
    run = kit("test_workers -x", {"PATH": os.environ["PATH"], "NIRVANA_TEST_WORKERS": "2"})
    assert run.stdout.strip() == "2", run.stderr
