"""nirvana.services with the real `python -m svc`: start, stop, kill, restart, and no orphans.

Each test runs its services under a state dir of its own, on an exchange and etcd prefix of its
own, with service names of its own, so it shares nothing with the demo or with other tests.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pika
import psutil
import pytest

from nirvana import paths, processes, rabbit, services


def group_pids(pgid):
    return [process.pid for process in processes.group_members(pgid)]


def publish(kit, count):
    connection = pika.BlockingConnection(pika.URLParameters(kit["url"]))
    channel = connection.channel()
    for i in range(count):
        channel.basic_publish(kit["exchange"], "foo", json.dumps({"type": "new_order", "id": f"e{i}"}).encode())
    connection.close()


# ---------------------------------------------------------------- pure checks


def test_a_bad_service_name_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"bad service name 'Orders!': use 1-32 of a-z"):
        services.start("Orders!")


def test_a_recorded_pid_that_is_now_another_process_is_never_signalled(tmp_path, monkeypatch):
    # Given a record that names this very test process (a reused pid, another start time)
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path))
    (tmp_path / "services").mkdir()
    record = services.Service("ghost", os.getpid(), 0.0, False, "events", "ghost.log")
    (tmp_path / "services" / "ghost.json").write_text(json.dumps(record.__dict__))
    # I expect the kit to see no service there, forget the record, and stop nothing
    assert services.running("ghost") is None
    assert services.stop_all() == []
    assert not (tmp_path / "services" / "ghost.json").exists()


def test_status_lines_say_the_facts_without_pids():
    up = services.Status("orders", "running", pids=(4242,), dedup=True, uptime=3.2)
    assert up.summary == "orders: running, dedup on"
    assert str(up) == "orders: running, dedup on (pid 4242, up 3 s)"
    two = services.Status("orders", "running", pids=(4242, 4243), dedup=False, uptime=0)
    assert two.summary == "orders: running x2, dedup off"
    assert str(services.Status("notify", "exited with status 2")) == "notify: exited with status 2"
    # a notebook shows the facts, never the pid, for a cell that ends in start() or status()["orders"]
    from IPython.lib.pretty import pretty

    assert pretty(up) == "orders: running, dedup on"
    assert pretty(services.Service("orders", 4242, 0.0, False, "events", "", instance=2)) == "orders@2: running, dedup off"
    assert pretty(services.StatusTable(orders=up)) == str(up)


# ---------------------------------------------------------------- the real python -m svc


def test_start_waits_until_ready_and_stop_leaves_nothing(kit):
    name, lines = kit["names"]["a"], []
    service = services.start(name, env=kit["env"], progress=lines.append)
    # ready means its queue has a consumer; it runs in a group of its own, recorded on disk
    assert rabbit.consumers(name, exchange=kit["exchange"]) == 1
    assert os.getpgid(service.pid) == service.pid
    assert services.status([name])[name].summary == f"{name}: running, dedup off"
    assert services.running_pids() == [service.pid]
    assert (paths.state_dir() / "services" / f"{name}.json").exists()
    assert lines[-1] == f"{name}: ready, dedup off"
    # starting it again is a no-op that says so; the other dedup setting points at restart()
    assert services.start(name, env=kit["env"], progress=lines.append) == service
    assert lines[-1] == f"{name}: already running, dedup off"
    with pytest.raises(services.ServiceError, match=r"use restart\(.*dedup=True\)"):
        services.start(name, dedup=True, env=kit["env"])
    # a graceful stop ends the whole group and the record
    assert services.stop(name, progress=lines.append) is True
    assert lines[-1] == f"{name}: stopped"
    assert group_pids(service.pid) == [] and services.running_pids() == []
    assert services.status([name])[name].summary == f"{name}: stopped"
    assert services.stop(name, progress=lines.append) is False and lines[-1] == f"{name}: not running"


def test_a_crash_leaves_the_events_waiting_and_a_restart_drains_them(kit):
    name = kit["names"]["a"]
    crashed = services.start(name, env=kit["env"], progress=lambda _: None)
    # When the service is killed (SIGKILL), then 3 events are published
    assert services.kill(name, progress=lambda _: None) is True
    assert group_pids(crashed.pid) == [] and services.running(name) is None
    publish(kit, 3)
    # I expect them to wait in its queue, and a restart to consume them all
    assert rabbit.queue_depth(name, exchange=kit["exchange"]) == 3
    again = services.restart(name, env=kit["env"], progress=lambda _: None)
    assert again.pid != crashed.pid and again.dedup is False
    assert rabbit.wait_for_depth(name, 0, exchange=kit["exchange"], timeout=10, progress=lambda _: None) == 0
    assert "error" not in services.logs(name).lower()


def test_restart_keeps_or_changes_dedup(kit):
    name = kit["names"]["a"]
    services.start(name, dedup=True, env=kit["env"], progress=lambda _: None)
    kept = services.restart(name, env=kit["env"], progress=lambda _: None)
    assert kept.dedup is True
    changed = services.restart(name, dedup=False, env=kit["env"], progress=lambda _: None)
    assert changed.dedup is False
    assert services.summary([name]) == f"{name}: running, dedup off"


def test_replicas_share_one_queue_and_one_can_crash_while_its_sibling_carries_on(kit):
    name, lines = kit["names"]["a"], []
    first = services.start(name, dedup=True, replicas=2, env=kit["env"], progress=lines.append)
    assert lines[-1] == f"{name}: ready, dedup on, 2 replicas"
    assert rabbit.consumers(name, exchange=kit["exchange"]) == 2
    assert [s.instance for s in services.instances(name)] == [1, 2] and first.instance == 1
    assert services.summary([name]) == f"{name}: running x2, dedup on"
    # When replica 2 crashes, replica 1 still consumes
    assert services.kill(name, instance=2, progress=lines.append)
    assert lines[-1] == f"{name}@2: killed (SIGKILL)"
    assert rabbit.consumers(name, exchange=kit["exchange"]) == 1
    assert services.summary([name]) == f"{name}: running, dedup on"
    # and asking for 2 replicas again starts only the missing one
    services.start(name, dedup=True, replicas=2, env=kit["env"], progress=lines.append)
    assert services.instances(name)[0] == first and len(services.running_pids()) == 2
    assert services.stop(name, progress=lines.append)
    assert lines[-2:] == [f"{name}: stopped", f"{name}@2: stopped"]
    assert services.running_pids() == []


# A replica is started under setpriv(1) (its parent-death signal) and is setpriv until that execs it:
# read then, the kit took it for dead and dropped its record, and a loop starting replicas until a
# queue was empty (test_cluster's poison event) started more than it meant to (CI: 5 and 6 for 4).
def test_a_replica_asked_for_at_once_after_its_start_is_running(kit):
    name = kit["names"]["a"]
    for _ in range(3):
        started = services.start(name, env=kit["env"], wait=False, progress=lambda _: None)
        assert [s.pid for s in services.instances(name)] == [started.pid]
        services.kill(name, progress=lambda _: None)
        assert services.instances(name) == []


def test_a_start_that_fails_says_why_with_the_last_log_lines(kit):
    name = kit["names"]["b"]
    with pytest.raises(services.ServiceError) as caught:
        services.start(name, env={**kit["env"], "PREFETCH": "lots"}, progress=lambda _: None)
    message = str(caught.value)
    assert message.startswith(f"{name} exited with status 2 before it was ready:")
    assert "PREFETCH" in message.splitlines()[-1]
    assert services.status([name])[name].summary == f"{name}: exited with status 2"
    assert services.running_pids() == []


SUBPROCESS = textwrap.dedent("""
    import os, sys
    from nirvana import processes, services
    if sys.argv[3] == "vanish":   # an orphan as off Linux, where no death signal takes the service along
        processes.death_signal = lambda: []
    services.start(sys.argv[1], env={"EVENTS_EXCHANGE": sys.argv[2]}, progress=lambda _: None)
    if sys.argv[3] == "vanish":
        os._exit(0)   # like a kernel killed with SIGKILL: no atexit
""")


def run_kernel(kit, name, how):
    """Another interpreter (a notebook kernel) that starts a service and exits ``how``."""
    subprocess.run([sys.executable, "-c", SUBPROCESS, name, kit["exchange"], how],
                   cwd=paths.ROOT, env=dict(os.environ), check=True, timeout=30)


def test_a_kernel_that_exits_stops_the_services_it_started(kit):
    run_kernel(kit, kit["names"]["a"], "exit")
    assert services.running_pids() == []
    assert services.running(kit["names"]["a"]) is None


def test_stop_all_stops_a_service_an_earlier_kernel_left_behind(kit):
    # Given a kernel that died without cleaning up: its service runs on, orphaned
    name = kit["names"]["b"]
    run_kernel(kit, name, "vanish")
    [orphan] = services.running_pids()
    assert services.status([name])[name].summary == f"{name}: running, dedup off"
    # When this kernel stops everything, I expect the orphan gone too
    assert services.stop_all() == [name]
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert services.running_pids() == []


def test_a_service_killed_from_here_is_killed_in_status_also_when_another_kernel_started_it(kit):
    # Given a service another kernel started (no child of this interpreter: no exit status to reap)
    name = kit["names"]["a"]
    run_kernel(kit, name, "vanish")
    # When this kernel kills it, I expect its state to say killed (the kit sent the SIGKILL), then
    # stopped after a start and a stop from here
    assert services.kill(name, progress=lambda _: None) is True
    assert services.status([name])[name].state == "killed"
    services.start(name, env=kit["env"], progress=lambda _: None)
    services.stop(name, progress=lambda _: None)
    assert services.status([name])[name].state == "stopped"


def test_a_service_that_ignores_sigterm_is_killed_at_the_deadline(kit):
    name = kit["names"]["a"]
    service = services.start(name, env=kit["env"], progress=lambda _: None)
    os.kill(service.pid, signal.SIGSTOP)   # a stopped process cannot act on SIGTERM
    lines = []
    assert services.stop(name, timeout=0.5, progress=lines.append) is True
    assert lines == [f"{name}: killed, it ignored SIGTERM for 0.5 s"]
    assert group_pids(service.pid) == []


def test_a_notebook_kernel_stops_its_services_when_it_shuts_down(kit):
    from jupyter_client.manager import start_new_kernel

    name = kit["names"]["a"]
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(paths.ROOT))
    try:
        reply = client.execute_interactive(
            f"from nirvana import services; services.start({name!r}, progress=lambda _: None).pid",
            timeout=30, output_hook=lambda _msg: None)
        assert reply["content"]["status"] == "ok"
        [pid] = services.running_pids()
    finally:
        manager.shutdown_kernel(now=False)   # what JupyterLab's "shut down kernel" sends
        client.stop_channels()
    assert services.running_pids() == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_stop_all_also_stops_a_kit_service_whose_record_was_lost(kit):
    name = kit["names"]["b"]
    service = services.start(name, env=kit["env"], progress=lambda _: None)
    (paths.state_dir() / "services" / f"{name}.json").unlink()
    assert services.running(name) is None and services.running_pids() == [service.pid]
    assert services.stop_all() == [f"{name}@unrecorded"]
    assert group_pids(service.pid) == [] and services.running_pids() == []


def test_dedup_without_etcd_is_refused_up_front_with_the_command_that_starts_it(kit):
    name = kit["names"]["b"]
    with pytest.raises(services.ServiceError, match=r"etcd is not answering at 127.0.0.1:9: start the stack with `./kit up`"):
        services.start(name, dedup=True, env={**kit["env"], "ETCD_ENDPOINTS": "127.0.0.1:9"})
    assert services.running_pids() == []


def test_a_dead_record_is_not_deleted_once_another_kernel_recorded_a_new_process_under_its_key(tmp_path, monkeypatch):
    # Given a record whose process has exited, read by one kernel (a panel's light refresher)
    from nirvana import service_records as records
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    old = records.Service("orders", 2 ** 22 + 1, 1.0, False, "events", "svc-orders.log")
    new = records.Service("orders", os.getpid(), 2.0, True, "events", "svc-orders.log")
    processes.write_record(records.record_path("orders"), old.__dict__)

    def meanwhile_restarted(service):
        # when another kernel restarts the service while this one checks the dead pid
        processes.write_record(records.record_path("orders"), new.__dict__)
        return False

    monkeypatch.setattr(records, "alive", meanwhile_restarted)
    assert records.instances("orders") == []
    # I expect the new process's record kept: deleting it would leave the new process unrecorded
    assert records.read_record(records.record_path("orders")) == new
