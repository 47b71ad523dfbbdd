"""nirvana.processes, the one supervisor: start records, recognising a process, stopping a group."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from nirvana import launcher, processes, watchdog
from nirvana._wait import poll, quiet
from nirvana.stack import ports

SLEEPER = "import time; time.sleep(60)"
# a group leader that ignores SIGTERM and has a child: only SIGKILL to the group ends both
STUBBORN = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']); time.sleep(60)")


def start(tmp_path, code):
    return launcher.start(launcher.Command([sys.executable, "-c", code], tmp_path / "p.log", os.environ, tmp_path)).popen


def test_a_record_names_its_process_until_the_pid_means_another(tmp_path):
    child = start(tmp_path, SLEEPER)
    try:
        path = tmp_path / "p.json"
        processes.write_record(path, {"pid": child.pid, "started": processes.started_at(child.pid), "x": 1})
        record = processes.read_record(path)
        assert record["x"] == 1 and processes.recorded_process(record).pid == child.pid
        # the same pid with another start time is not ours (a reused pid)
        assert processes.recorded_process({**record, "started": record["started"] - 5}) is None
    finally:
        processes.stop_groups([child.pid], 0, reaper=lambda _pid: child.poll())


def test_a_pid_file_in_the_older_format_is_read(tmp_path):
    # Given a pid file written before the kit had one format (the start time called create_time)
    path = tmp_path / "etcd.pid"
    path.write_text(json.dumps({"pid": os.getpid(), "create_time": processes.started_at(os.getpid())}))
    # I expect it read, and to name this very process
    assert processes.recorded_process(processes.read_record(path)).pid == os.getpid()
    path.write_text("not json")
    assert processes.read_record(path) is None


def test_stop_groups_terms_then_kills_the_whole_group(tmp_path):
    # Given one group that stops on SIGTERM and one whose leader and child ignore it
    polite, stubborn = start(tmp_path, SLEEPER), start(tmp_path, STUBBORN)
    children = {polite.pid: polite, stubborn.pid: stubborn}
    time.sleep(0.5)   # the stubborn leader's child has started (it is in the group at once)
    assert len(processes.group_members(stubborn.pid)) == 2
    # When both are stopped with a 1 s grace
    ended = processes.stop_groups([polite.pid, stubborn.pid], 1.0, reaper=lambda pid: children[pid].poll())
    # I expect the first stopped, the second killed, no member of either group left
    assert ended == {polite.pid: "stopped", stubborn.pid: "killed"}
    assert processes.group_members(polite.pid) == [] and processes.group_members(stubborn.pid) == []
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL


# A leader whose main thread has ended (a zombie to ps) while another thread of it still runs and
# holds a bound UDP socket: as node's statsd is for a moment after SIGTERM, when the kernel ends its
# threads one by one. Seen in CI: `stack.down(only=["statsd"])` returned, and the `up` after it found
# 8125/udp "held by a program this user cannot see" (the socket had no pid: the leader's fd table is gone).
HALF_EXITED = ("import ctypes, signal, socket, sys, threading, time\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the holding thread outlives the TERM\n"
               "udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(('127.0.0.1', 0))\n"
               "print(udp.getsockname()[1], flush=True)\n"
               "def hold():\n"
               "    time.sleep(float(sys.argv[1])); udp.close()\n"
               "threading.Thread(target=hold).start()\n"
               "ctypes.CDLL(None).pthread_exit(None)\n")


def test_a_zombie_leader_whose_threads_still_run_is_alive_and_its_group_is_waited_for(tmp_path):
    hold = 1.5   # seconds the last thread keeps the socket after the leader's own thread ended
    child = subprocess.Popen([sys.executable, "-c", HALF_EXITED, str(hold)], stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        port = int(child.stdout.readline())
        # Given the leader is a zombie to psutil while a thread of it holds the port
        leader = psutil.Process(child.pid)
        poll(leader.status, lambda status: status == psutil.STATUS_ZOMBIE, what="the leader's thread to end",
             timeout=5, progress=quiet)
        assert leader.num_threads() > 1
        # I expect it alive, its group waited for, and the port free once the group is said gone
        assert processes.alive(leader)
        assert watchdog._live({child.pid}) == {child.pid}   # the watchdog's own copy of the rule
        started = time.monotonic()
        ended = processes.stop_groups([child.pid], 5, reaper=lambda _pid: child.poll())
        assert ports.port_holder(port, "udp") is None, f"stopped after {time.monotonic() - started:.2f} s, port still held"
        assert ended == {child.pid: "stopped"}
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
