"""nirvana.processes, the one supervisor: start records, recognising a process, stopping a group."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from nirvana import launcher, paths, processes, watchdog
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


# A kernel that has talked to etcd over gRPC and then starts a service. Seen in CI (a normal user's
# run, the solutions notebook): `services.restart` raised "orders exited with status -6 before it was
# ready" with gRPC's "Epoll1Poller ... epoll_wait error: Bad file descriptor" as the service's only log
# line, twice in one kernel: the start's preexec_fn made CPython fork() the kernel and run the at-fork
# handlers in the child, gRPC's restarted its poller there, and the child's closing of its files before
# the exec pulled the poller's epoll descriptor from under it (grpc/grpc#43055). The race is rare (1 child
# in 500-1000 with an RPC thread busy); what makes it possible is any at-fork handler running in the
# child, which is asked here directly: a Python one (it runs wherever gRPC's C one does on a fork()).
FORK_HANDLERS = """
import os, sys
from pathlib import Path
from nirvana import launcher
ran = Path(sys.argv[1])
os.register_at_fork(after_in_child=lambda: ran.write_text("an at-fork handler ran in the child"))
child = launcher.start(launcher.Command([sys.executable, "-c", "pass"], ran.with_suffix(".log"),
                                        os.environ, ran.parent, die_with_starter=True))
print(child.popen.wait(timeout=30))
"""


def test_a_process_started_to_die_with_its_starter_runs_no_fork_handler_before_its_exec(tmp_path):
    ran = tmp_path / "ran"
    out = subprocess.run([sys.executable, "-c", FORK_HANDLERS, str(ran)], capture_output=True, text=True,
                         timeout=60, cwd=paths.ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr[-500:]
    assert not ran.exists(), ran.read_text()


# The same mechanism reached another way: a learner's `!ls`, pexpect or multiprocessing in a chapter's
# kernel fork() it without the kit. After `import nirvana` gRPC's fork handlers are off (the kit never
# uses gRPC in a forked child), so a fork starts none of gRPC's threads in the child to race its exec.
FORKED_THREADS = """
import os, sys, time
import nirvana
from svc import Etcd
from svc.config import parse_endpoints
etcd = Etcd(parse_endpoints(sys.argv[1]), timeout=5)   # kept open, as a chapter keeps its client
etcd.get(b"/any")   # gRPC started: its threads run here
time.sleep(0.5)   # and are idle, as between two cells (a call in flight has gRPC skip its handlers)
pid = os.fork()
if pid == 0:
    time.sleep(0.5)   # a restarted gRPC thread would be running by now
    os.write(1, str(len(os.listdir("/proc/self/task"))).encode())
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_fork_of_a_kernel_that_used_etcd_starts_no_grpc_thread_in_the_child(etcd_endpoint):
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run([sys.executable, "-c", FORKED_THREADS, etcd_endpoint], capture_output=True, text=True,
                         timeout=60, cwd=paths.ROOT, env=env)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout == "1", f"the forked child has {out.stdout} threads: gRPC's fork handlers ran"
