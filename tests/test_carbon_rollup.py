"""Carbon's roll-up of statsd's metrics, against a real carbon-cache run with the kit's storage
rules (assets/carbon) on free ports: one minute read back from both archives of its whisper files."""

import json
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from conftest import need, tcp_open
from whisper_files import READ_COMPLETE

from nirvana import paths
from nirvana.stack.component import ports, render
from nirvana.testing import free_port, wait_for

# carbon-cache and whisper are Debian's (graphite-carbon, python3-whisper), for the system python3.
SYSTEM_PYTHON = "/usr/bin/python3"
READ_MINUTE = READ_COMPLETE + """
import json, sys
start = int(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    if not complete(path):   # carbon still creating it: no points yet
        print("null")
        sys.exit()
    seconds = whisper.fetch(path, start - 1, start + 59, archiveToSelect=1)[1]
    minute = whisper.fetch(path, start - 60, start, archiveToSelect=60)[1]
    out[path] = [seconds, minute]
print(json.dumps(out))
"""


@pytest.fixture
def own_carbon(tmp_path):
    """A throwaway carbon-cache with the kit's carbon.conf template and storage rules, never the
    stack's; killed at teardown. Yields (plaintext port, whisper folder)."""
    need("carbon-cache (apt package graphite-carbon)", shutil.which("carbon-cache") is not None)
    storage, line, pickle, query = tmp_path / "graphite", free_port(), free_port(), free_port()
    config = render("carbon/carbon.conf.in", tmp_path / "carbon.conf",
                    **{**ports(), "HOST": "127.0.0.1", "CARBON_PORT": line, "CARBON_PICKLE_PORT": pickle,
                       "CARBON_QUERY_PORT": query},
                    CONF_DIR=paths.ASSETS / "carbon", STORAGE_DIR=storage, WHISPER_DIR=storage / "whisper",
                    LOG_DIR=tmp_path)
    with open(tmp_path / "carbon.log", "ab") as log:
        process = subprocess.Popen(["carbon-cache", "--config", str(config), "--pidfile", str(tmp_path / "carbon.pid"),
                                    "--nodaemon", "--logfile", "-", "start"], env={"GRAPHITE_ROOT": str(storage),
                                   "PATH": "/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: tcp_open("127.0.0.1", line), f"carbon-cache on 127.0.0.1:{line}", timeout=30)
        yield line, storage / "whisper"
    finally:
        process.kill()
        process.wait(10)


# The names statsd 0.9.0 sends for one timer (lib/process_metrics.js, percentThreshold 90) and a
# counter, each with how its minute must roll up (statsd's docs/graphite.md).
TIMER = {"sum": sum, "sum_90": sum, "sum_squares": sum, "sum_squares_90": sum, "count": sum, "count_90": sum,
         "histogram.bin_100": sum, "lower": min, "upper": max, "upper_90": max,
         "mean": lambda v: sum(v) / len(v), "mean_90": lambda v: sum(v) / len(v),
         "count_ps": lambda v: sum(v) / len(v)}


def test_a_minute_rolls_up_as_statsd_means_it(own_carbon):
    port, whisper_dir = own_carbon
    tag = f"t{uuid.uuid4().hex[:6]}"
    metrics = {f"stats.timers.{tag}_orders_new_order_ms.{name}": roll for name, roll in TIMER.items()}
    metrics[f"stats_counts.{tag}_orders_new_order_ok"] = sum
    # Given one point a second for a whole minute (two minutes ago: inside the 1 s archive)...
    start = (int(time.time()) // 60 - 2) * 60
    values = [float(i % 7 + 1) * 1.5 for i in range(60)]
    lines = "".join(f"{name} {value} {start + i}\n" for name in metrics for i, value in enumerate(values))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(lines.encode())
    files = {name: whisper_dir.joinpath(*name.split(".")).with_suffix(".wsp") for name in metrics}

    def read():
        if not all(path.exists() for path in files.values()):
            return None
        out = subprocess.run([SYSTEM_PYTHON, "-c", READ_MINUTE, str(start), *map(str, files.values())],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        archives = json.loads(out)
        return archives if archives is not None and all(None not in seconds for seconds, _ in archives.values()) else None

    archives = wait_for(read, "60 points of every metric on disk", timeout=30, interval=0.5)
    # ... I expect the minute archive to hold the sum of the seconds for totals (counts, sums,
    # histogram bins), their minimum for lower, maximum for upper, and the mean of the rest.
    for name, roll in metrics.items():
        seconds, [minute] = archives[str(files[name])]
        assert seconds == values
        assert minute == pytest.approx(roll(seconds)), name
