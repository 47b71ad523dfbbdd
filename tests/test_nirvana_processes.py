"""nirvana.processes, the one supervisor: start records, recognising a process, stopping a group."""

import json
import os
import signal
import sys
import time

from nirvana import launcher, processes

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
