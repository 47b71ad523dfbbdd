"""One service name, one process: kernels that start or stop the same service at the same moment.

Two notebook kernels (here: two real Python interpreters, each the way a kernel runs the kit) start
the same service at once; the kit must end with exactly one ``python -m svc`` for it and one
consumer on its queue, and a stop from a third interpreter must leave none, read both from the kit's
records and from RabbitMQ. Each test runs under a state dir, exchange and service names of its own
(the ``kit`` fixture, exported to the interpreters it starts).
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import psutil

from nirvana import paths, processes, rabbit, services
from nirvana._wait import poll, quiet

STARTERS = 2
READY_WITHIN = 60.0    # seconds for an interpreter to import the kit (2 cores shared with other work)

# An interpreter that imports the kit, says "ready", starts the service when the test writes "go"
# on its stdin (the barrier: both get it within microseconds), prints what start() said, and then
# keeps running (a service dies with the kernel that started it) until its stdin closes.
KERNEL = textwrap.dedent("""
    import sys
    from nirvana import services
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        service = services.start(sys.argv[1], progress=lambda line: print("said", line, flush=True))
        print("started", service.pid, flush=True)
    except Exception as error:
        print("error", type(error).__name__, error, flush=True)
    sys.stdin.read()
""")


def start_at_once(name: str, count: int = STARTERS) -> tuple[list[subprocess.Popen], list[list[str]]]:
    """Start ``name`` from ``count`` interpreters at the same moment; their output lines up to
    their verdict ("started ..." or "error ...")."""
    procs = [subprocess.Popen([sys.executable, "-c", KERNEL, name], cwd=paths.ROOT, env=dict(os.environ),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    deadline = time.monotonic() + READY_WITHIN
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready" and time.monotonic() < deadline
    for proc in procs:      # the barrier
        proc.stdin.write("go\n")
    for proc in procs:
        proc.stdin.flush()
    said = []
    for proc in procs:
        lines = []
        while not lines or not lines[-1].startswith(("started", "error")):
            line = proc.stdout.readline()
            assert line, f"an interpreter ended before its verdict: {lines}"
            lines.append(line.strip())
        said.append(lines)
    return procs, said


def end(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def svc_processes(name: str) -> list[int]:
    """Every live ``python -m svc`` of this kit state dir serving ``name``, recorded or not."""
    return sorted(s.pid for s in services.records.kit_processes() if s.name == name)


def test_two_kernels_starting_one_service_at_once_end_with_one_process_and_one_consumer(kit):
    name = kit["names"]["a"]
    procs, said = start_at_once(name)
    try:
        # I expect exactly one svc process and one consumer, both interpreters naming that process
        # (the later one adopted the running service instead of starting a second)
        pids = svc_processes(name)
        assert len(pids) == 1, f"{len(pids)} svc processes for {name}: {said}"
        assert rabbit.consumers(name, exchange=kit["exchange"]) == 1
        assert sorted(lines[-1] for lines in said) == [f"started {pids[0]}"] * STARTERS, said
        assert sorted(lines[-2] for lines in said) == sorted([f"said {name}: ready, dedup off",
                                                              f"said {name}: already running, dedup off"]), said
        # When a third interpreter (this one) stops it, I expect no process and no consumer left
        lines = []
        assert services.stop(name, progress=lines.append) is True
        assert lines == [f"{name}: stopped"]
        assert svc_processes(name) == []
        assert rabbit.consumers(name, exchange=kit["exchange"]) == 0
        assert not (paths.state_dir() / "services" / f"{name}.json").exists()
    finally:
        end(procs)


def test_a_process_serving_the_service_without_a_record_is_found_by_start_and_by_stop(kit):
    # Given a service the kit started whose start record is gone (lost to the race above by a kit
    # before records were locked; a state folder cleaned by hand)
    name = kit["names"]["b"]
    service = services.start(name, progress=lambda _: None)
    record = paths.state_dir() / "services" / f"{name}.json"
    record.unlink()
    # When it is started again, I expect that process found (and recorded again), no second one
    lines = []
    assert services.start(name, progress=lines.append).pid == service.pid
    assert lines == [f"{name}: already running, dedup off"] and svc_processes(name) == [service.pid]
    # When its record is lost again and it is stopped by name, I expect that very process stopped
    # and its queue left with no consumer
    record.unlink()
    lines = []
    assert services.stop(name, progress=lines.append) is True
    assert lines == [f"{name}@unrecorded: stopped"]
    assert processes.group_members(service.pid) == [] and svc_processes(name) == []
    assert rabbit.consumers(name, exchange=kit["exchange"]) == 0


def test_stop_says_so_when_the_queue_keeps_a_consumer_the_kit_did_not_start(kit):
    # Given the service run by hand beside the kit's (another state folder: not the kit's to stop)
    name = kit["names"]["a"]
    services.start(name, progress=lambda _: None)
    by_hand = subprocess.Popen([sys.executable, "-m", "svc"], cwd=paths.ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "SERVICE_NAME": name})
    try:
        poll(lambda: rabbit.consumers(name, exchange=kit["exchange"]), lambda seen: seen == 2,
             what="the service run by hand to consume", timeout=20, progress=quiet)
        # When the kit stops its own, I expect it to say that one consumer goes on, not plain success
        lines = []
        assert services.stop(name, progress=lines.append) is True
        assert lines[0] == f"{name}: stopped"
        assert lines[1] == (f"{name}: its queue {rabbit.queue_of(name, kit['exchange'])} still has 1 consumer "
                            "the kit did not start (a `python -m svc` run by hand, or by another state folder)")
        assert psutil.pid_exists(by_hand.pid)
    finally:
        by_hand.terminate()
        by_hand.wait(timeout=15)


def test_a_record_written_by_two_writers_at_once_never_fails(tmp_path):
    # Given two writers of one start record at the same moment (two kernels, before the lock; the
    # stack's pid records), each writing many times
    path, errors = tmp_path / "services" / "orders.json", []

    def write(pid):
        try:
            for _ in range(300):
                processes.write_record(path, {"pid": pid, "started": 1.0})
        except OSError as error:
            errors.append(repr(error))

    writers = [threading.Thread(target=write, args=(pid,)) for pid in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    # I expect no error, one whole record left, and no temporary file behind
    assert errors == []
    assert processes.read_record(path)["pid"] in (1, 2)
    assert [p.name for p in path.parent.iterdir()] == ["orders.json"]


def test_a_process_started_under_another_name_is_not_stopped_with_the_service_it_serves(kit):
    # Given a process the kit started as "<name>-rebuild" that serves <name> (SERVICE_NAME, as a
    # rebuild's reader of the log does), and no process started as <name>
    name = kit["names"]["a"]
    reader = services.start(f"{name}-rebuild", env={"SERVICE_NAME": name}, wait=False, progress=lambda _: None)
    try:
        # When <name> is stopped, I expect nothing stopped: the reader is the kit's "<name>-rebuild"
        lines = []
        assert services.stop(name, progress=lines.append) is False
        assert psutil.pid_exists(reader.pid) and processes.group_members(reader.pid) != []
    finally:
        services.stop(f"{name}-rebuild", progress=lambda _: None)
