"""nirvana.watchdog: what an owner started is stopped when the owner dies, however it died.

The owner is a real Python process that starts a watchdog and a process group (a shell that
ignores SIGTERM and has children of its own, as rabbitmq-server has); it is SIGKILLed, so no
atexit and no finally of its runs.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
from conftest import need

from nirvana.launcher import tcp_open as answering
from nirvana.testing import RABBITMQ_SERVER, wait_for
from nirvana.watchdog import Watchdog

OWNER = """
import json, subprocess, sys, tempfile
from nirvana.watchdog import Watchdog
watchdog = Watchdog(stop_timeout=1.0)
group = subprocess.Popen(["sh", "-c", 'trap "" TERM; sleep 300 & sleep 300 & wait'], start_new_session=True)
folder = tempfile.mkdtemp(prefix="watchdog-test-")
watchdog.group(group.pid)
watchdog.remove(folder)
print(json.dumps({"group": group.pid, "folder": folder, "watchdog": watchdog.pid}), flush=True)
sys.stdin.read()
"""
GONE_WITHIN = 10.0   # seconds: SIGTERM ignored, SIGKILL after the owner's 1 s, and some slack
RABBIT_OWNER = """
import json, pathlib, sys
from nirvana.testing import OwnRabbitMQ
node = OwnRabbitMQ(pathlib.Path(sys.argv[1]))
node.wait()
print(json.dumps({"group": node.process.pid, "port": node.port}), flush=True)
sys.stdin.read()
"""
RABBIT_GONE_WITHIN = 40.0   # seconds: the node's orderly stop on SIGTERM (SIGKILL after 30 s)


def group_alive(pgid: int) -> list[int]:
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except OSError:
            continue
    return alive


def gone(pid: int) -> bool:
    """No such process, or an exited one not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextlib.contextmanager
def owner(code: str, *args: str):
    """A Python process running ``code`` (which prints its facts as one JSON line, then waits);
    (the process, its facts). Killed at the end, and whatever is left of its ``group``."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    facts = {}
    try:
        facts = json.loads(process.stdout.readline())
        yield process, facts
    finally:
        process.kill()
        process.wait(10)
        process.stdin.close()
        process.stdout.close()
        for pid in group_alive(facts.get("group", -1)):
            os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_owner_takes_its_group_grandchildren_and_folder_with_it():
    with owner(OWNER) as (process, facts):
        # Given an owner whose group ignores SIGTERM and has grandchildren
        wait_for(lambda: len(group_alive(facts["group"])) == 3, timeout=10, what="the shell and its two sleeps")
        # When the owner is SIGKILLed
        process.kill()
        process.wait(10)
        # I expect the whole group gone (SIGKILL after the deadline), the folder removed, the watchdog ended
        wait_for(lambda: not group_alive(facts["group"]), timeout=GONE_WITHIN, what="the owner's group to end")
        wait_for(lambda: gone(facts["watchdog"]), timeout=GONE_WITHIN, what="the watchdog to exit")
        assert not os.path.exists(facts["folder"])


def test_close_dismisses_the_watchdog_and_stops_nothing(tmp_path):
    # Given a watchdog told about a running group
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        watchdog = Watchdog(stop_timeout=1.0)
        watchdog.group(sleeper.pid)
        watchdog.remove(tmp_path)
        # When its owner closes it (the owner cleans up itself)
        started = time.monotonic()
        watchdog.close()
        # I expect the watchdog gone at once, the group and the folder untouched
        assert watchdog.process.poll() is not None and time.monotonic() - started < 2
        assert sleeper.poll() is None and tmp_path.exists()
        watchdog.close()   # idempotent
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_reused_pid_is_never_signalled(tmp_path):
    # Given a watchdog told about a group whose leader has ended, and a record naming a live
    # process with another start time (its pid reused by another program)
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (tmp_path / "gone.pid").write_text(json.dumps({"pid": stranger.pid, "started": 1.0}))
    try:
        watchdog = Watchdog(stop_timeout=1.0)
        watchdog.records(tmp_path)
        # When its owner goes without a goodbye (the pipe closes)
        watchdog.process.stdin.close()
        watchdog.process.wait(10)
        # I expect the stranger untouched
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


HANDLES_TERM = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); print('ready', flush=True); time.sleep(300)"


def test_a_frozen_group_ends_on_sigterm_not_at_the_kill_deadline():
    # Given a watchdog with a long stop deadline, told about a group frozen by SIGSTOP (a fault of
    # chapter 05) that handles SIGTERM, as etcd does (a handled signal waits while it is frozen)
    frozen = subprocess.Popen([sys.executable, "-c", HANDLES_TERM], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert frozen.stdout.readline() == b"ready\n"
        watchdog = Watchdog(stop_timeout=30.0)
        watchdog.group(frozen.pid)
        os.killpg(frozen.pid, signal.SIGSTOP)
        # When its owner goes without a goodbye
        started = time.monotonic()
        watchdog.process.stdin.close()
        # I expect the group to end by its SIGTERM handler, long before the SIGKILL 30 s later
        frozen.wait(10)
        assert frozen.returncode == 0 and time.monotonic() - started < 5
        watchdog.process.wait(10)
    finally:
        frozen.kill()
        frozen.wait()
        frozen.stdout.close()


def test_a_throwaway_rabbitmq_node_ends_with_the_test_run_that_started_it(tmp_path):
    need("rabbitmq-server (Debian's package, to run a throwaway node)", shutil.which("rabbitmqctl") is not None
         and os.path.exists(RABBITMQ_SERVER), hint="sudo apt-get install -y rabbitmq-server")
    with owner(RABBIT_OWNER, str(tmp_path / "rabbitmq")) as (process, facts):
        # Given a test run that started a throwaway node (nirvana.testing.OwnRabbitMQ), speaking AMQP
        assert answering(facts["port"])
        # When the run is SIGKILLed (no fixture teardown runs)
        process.kill()
        process.wait(10)
        # I expect the node's whole group (the script, beam.smp) gone and its port closed
        wait_for(lambda: not group_alive(facts["group"]), timeout=RABBIT_GONE_WITHIN, what="the node to end")
        assert not answering(facts["port"])
