"""bench/bench_compare.py: a baseline's ``python -m svc`` imports the baseline's svc, not this checkout's."""

import os
import subprocess
import sys
from pathlib import Path

from nirvana import launcher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bench_compare import checkout_env  # noqa: E402


def test_a_baselines_svc_is_imported_where_the_launcher_starts_services(tmp_path):
    # Given a baseline folder with an svc package of its own...
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text("")
    settings = checkout_env(tmp_path)
    # ... when a process is started with those settings as nirvana.testing.World.env passes them
    # (upper-cased), in the folder nirvana.launcher starts services in (this checkout, with its
    # own svc/, which Python puts first on sys.path for -m and -c alike)...
    env = {**os.environ, **{key.upper(): value for key, value in settings.items()}}
    found = subprocess.run([sys.executable, "-c", "import svc; print(svc.__file__)"], env=env,
                           cwd=launcher.Command.cwd, capture_output=True, text=True, timeout=60, check=True)
    # ... I expect the baseline's svc imported (before: this checkout's, so every "baseline" svc
    # run of bench_compare measured this checkout against itself).
    assert found.stdout.strip() == str(tmp_path / "svc" / "__init__.py")
