"""Shared fixtures: the real services the tests talk to.

A fixture checks its service when asked for it. In CI (CI=true) a missing service fails the
test; elsewhere it is skipped with the command that starts it.
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest

from nirvana import endpoints, launcher, services, settings, stack
from nirvana.testing import RabbitmqctlRefused
from run_layout import PRIVATE_STACK
from svc import Etcd, topology
from svc.config import parse_endpoints

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
START_HINT = "start the stack with `./kit up`"
PROGRAM_WORDS = ("on PATH", "package", "./kit setup")   # in need()'s what: a program is missing
INSIDE = "NIRVANA_TEST_NETNS"     # set to the test's node id inside its namespace
RUN_TIMEOUT = 300.0               # seconds for one test in its namespace, cluster start and stop included


def need(what: str, ok: bool, hint: str = "") -> None:
    """Fail (in CI) or skip (elsewhere) when a service the test needs is not answering (``hint``:
    what to do instead of starting the stack, when a program is missing rather than a service)."""
    if ok:
        return
    if not hint and any(word in what for word in PROGRAM_WORDS):   # a program, not a service of the stack
        hint = "install it (`./kit setup --native` installs every package of the native stack)"
    message = f"{what} is missing: {hint}" if hint else f"{what} is not answering: {START_HINT}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def in_own_namespace(request, tmp_path) -> bool:
    """True inside the test's namespace (run the body); outside, run the test there and check it
    ran and passed (False: the body is done): its junit report must count one test, passed, not
    skipped (a skip inside would otherwise pass the outer test having run nothing). For the tests of
    a cluster of the kit's own: inside, nothing answers on loopback, and the machine's RabbitMQ,
    epmd and the shared stack are never seen nor touched. Not root: ``unshare --map-root-user``."""
    nodeid = plain_nodeid(request.node)
    if os.environ.get(INSIDE) == nodeid:
        return True
    returncode, output, report = run_in_namespace(request, tmp_path, [nodeid])
    assert returncode == 0, output
    counts = inner_counts(report)
    assert counts == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}, f"ran {counts}, not 1 passed: {output}"
    return False


def run_in_namespace(request, tmp_path, nodeids: list[str]) -> tuple[int, str, Path]:
    """Run pytest on ``nodeids`` (one pytest, in their order) in a network namespace of their own with a
    state folder under ``tmp_path``, INSIDE set to the ids (one a line); (its exit status, the end of
    its output, its junit report). Skips (fails in CI) when no namespace can be made here. Raises
    subprocess.TimeoutExpired past RUN_TIMEOUT seconds a test, plus 60."""
    need("unshare (util-linux) and ip (iproute2)", bool(shutil.which("unshare") and shutil.which("ip")),
         hint="install util-linux and iproute2")
    need("etcd and RabbitMQ's server (./kit setup)", bool(shutil.which("etcd")) and stack.rabbitmq.SERVER.exists(),
         hint="run ./kit setup --native")
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    probe = subprocess.run([*unshare, "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace here ({' '.join(unshare)}: {probe.stderr.strip()}): run as root, "
                    "or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)")
    env = {**os.environ, INSIDE: "\n".join(nodeids), "NIRVANA_STATE": str(tmp_path / "state")}
    for variable in ("AMQP_URL", "ETCD_ENDPOINTS", "EVENTS_EXCHANGE", "ETCD_PREFIX", PRIVATE_STACK,
                     "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        env.pop(variable, None)   # inside, the cluster's: nothing of the outer stack
    report = tmp_path / "inside.xml"
    script = 'ip link set lo up && exec "$@"'
    argv = [*unshare, "sh", "-c", script, "sh", sys.executable, "-m", "pytest", "-q", "-rA",
            "-p", "no:cacheprovider", "-o", "addopts=", "--timeout", str(int(RUN_TIMEOUT)),
            f"--junitxml={report}", *nodeids]
    run = subprocess.run(argv, cwd=request.config.rootpath, env=env, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT * len(nodeids) + 60)
    return run.returncode, f"in its own network namespace:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}", report


def plain_nodeid(node) -> str:
    """``node``'s test id as pytest takes it on a command line: under ``--dist loadgroup`` xdist
    appends ``@<group>`` to the id of a test in a group (share_group)."""
    groups = sorted(str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                    for mark in node.iter_markers("xdist_group"))
    suffix = "@" + "_".join(groups)
    return node.nodeid.removesuffix(suffix) if groups else node.nodeid


def inner_counts(report) -> dict[str, int]:
    """A junit XML report (pytest's --junitxml) -> {tests, failures, errors, skipped} of its suites."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}


def need_rabbitmqctl(purpose: str) -> None:
    """Skip (fail in CI) when the kit's broker's rabbitmqctl cannot be run by this user, with the
    real reason: not installed, or refused (a normal user beside the system's RabbitMQ)."""
    need(f"rabbitmqctl ({purpose})", shutil.which("rabbitmqctl") is not None,
         hint="sudo apt-get install -y rabbitmq-server")
    refused = stack.rabbitmq_node().refused()
    if refused:
        message = str(RabbitmqctlRefused(refused, purpose))
        # (root is never refused: in CI as root this is a fault; a normal user's run skips with the reason)
        pytest.fail(message, pytrace=False) if IN_CI and os.geteuid() == 0 else pytest.skip(message)


def native_only(*components: str) -> None:
    """Skip a test that stops these components or reads their files under state/ when one of them
    was found running instead of started by the kit (a docker-compose stack): the kit never stops
    what it did not start, and a container keeps its files inside."""
    found = [row.name for row in stack.status(components) if row.origin == "found running"]
    if found:
        pytest.skip(f"{', '.join(found)} found running, not started by the kit (a docker-compose stack?): "
                    "this test stops it or reads its files under state/; run it on the native stack "
                    "(`docker compose down`, then `./kit up`)")


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """The launcher's probe (:func:`nirvana.launcher.tcp_open`), host first as the fixtures ask."""
    return launcher.tcp_open(port, host, timeout)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    need(f"RabbitMQ on {endpoints.HOST}:{endpoints.AMQP_PORT}", tcp_open(endpoints.HOST, endpoints.AMQP_PORT))
    return endpoints.AMQP_URL


@pytest.fixture(scope="session")
def etcd_endpoint() -> str:
    need(f"etcd on {endpoints.ETCD_ENDPOINT}", tcp_open(endpoints.HOST, endpoints.ETCD_PORT))
    return endpoints.ETCD_ENDPOINT


@pytest.fixture
def etcd(etcd_endpoint):
    """(an Etcd client of the kit's etcd with a 5 s deadline, a fresh key prefix of the test's
    own); the prefix is deleted afterwards."""
    client = Etcd(parse_endpoints(etcd_endpoint), timeout=5.0)
    prefix = f"/t-{uuid.uuid4().hex[:8]}"
    yield client, prefix
    client.delete_prefix(prefix + "/")
    client.close()


@pytest.fixture(scope="session")
def graphite_url() -> str:
    need(f"graphite-web on {endpoints.GRAPHITE_URL}", tcp_open(endpoints.HOST, endpoints.GRAPHITE_PORT))
    need(f"statsd admin on {endpoints.HOST}:{endpoints.STATSD_ADMIN_PORT}",
         tcp_open(endpoints.HOST, endpoints.STATSD_ADMIN_PORT))
    return endpoints.GRAPHITE_URL


@pytest.fixture
def use_settings():
    """``use_settings(chosen)``: the kit's settings for this test (:func:`nirvana.settings.use`: a
    Settings, or None to read the environment again at the next call, as a kernel started now
    would); those in use before the test come back afterwards."""
    before: list = []

    def use(chosen=None) -> None:
        previous = settings.use(chosen)
        if not before:
            before.append(previous)

    yield use
    if before:
        settings.use(before[0])


@pytest.fixture
def kit_env(monkeypatch, use_settings, amqp_url, etcd_endpoint):
    """EVENTS_EXCHANGE and ETCD_PREFIX exported to values of this test only, and the kit's settings
    read again (as a kernel started now would). On teardown it stops every service the kit started,
    deletes the exchange with the talk's queues and those the test adds to ``services``, and the
    etcd keys under the prefix."""
    tag = uuid.uuid4().hex[:8]
    env = {"EVENTS_EXCHANGE": f"nirvana-test-{tag}", "ETCD_PREFIX": f"/nirvana-test-{tag}"}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    use_settings(None)
    world = {"tag": tag, "env": env, "exchange": env["EVENTS_EXCHANGE"], "url": amqp_url,
             "services": list(topology.DEFAULT_SERVICES)}
    yield world
    services.stop_all(timeout=2)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    topology.delete(connection.channel(), world["exchange"], services=world["services"])
    connection.close()
    etcd = Etcd(parse_endpoints(etcd_endpoint))
    try:
        etcd.delete_prefix(env["ETCD_PREFIX"] + "/")
    finally:
        etcd.close()


@pytest.fixture
def kit(tmp_path, monkeypatch, kit_env):
    """A private state dir, exchange and prefix (kit_env: exported, for what starts services without
    env=, panels and kernels) and service names; every service started under it is stopped afterwards."""
    monkeypatch.setenv("NIRVANA_STATE", str(tmp_path / "state"))
    names = {"a": f"a{kit_env['tag']}", "b": f"b{kit_env['tag']}"}
    kit_env["services"] += names.values()
    yield {**kit_env, "names": names}
    services.stop_all(timeout=2)
    assert services.running_pids() == []


MADE_UP_SERVICES: set[str] = set()   # svc_world's service names (t1a2b3c_orders), pruned at the end


@pytest.fixture(scope="session", autouse=True)
def prune_made_up_metrics():
    """At the end of the session, the made-up services' metrics leave statsd and Graphite's tree
    (:func:`nirvana.prune.prune`, once: it waits for statsd's last flush)."""
    yield
    if os.environ.get(PRIVATE_STACK):
        return   # the worker's own stack goes down with its metrics
    if MADE_UP_SERVICES and tcp_open(endpoints.HOST, endpoints.STATSD_ADMIN_PORT):
        from nirvana import prune

        prune.prune(MADE_UP_SERVICES, progress=print)


@pytest.fixture
def svc_world(amqp_url, etcd_endpoint, tmp_path):
    """An isolated svc world: its own exchange, etcd prefix and service names, services run as real
    ``python -m svc`` processes; on teardown it kills them, then removes its queues and keys (and
    its metrics, at the end of the session)."""
    from nirvana.testing import World

    world = World(amqp_url, etcd_endpoint, tmp_path, statsd=(endpoints.HOST, endpoints.STATSD_PORT),
                  rabbitmqctl=stack.rabbitmq_node().ctl())
    yield world
    world.close()
    MADE_UP_SERVICES.update(world.services)


@pytest.fixture
def etcd_factory(tmp_path):
    """Start throwaway etcds (``etcd_factory(*flags)``, e.g. ``"--max-txn-ops", "16"``) on free ports,
    never the stack's; each is killed at teardown."""
    from nirvana.testing import OwnEtcd

    need("etcd (on PATH, to run a throwaway one)", shutil.which("etcd") is not None)
    started = []

    def start(*flags: str) -> OwnEtcd:
        etcd = OwnEtcd(*flags, data_dir=tmp_path / f"etcd-{len(started)}")
        started.append(etcd)
        etcd.start()
        return etcd

    yield start
    for etcd in started:
        etcd.close()   # its data stays in tmp_path; its watchdog ends


@pytest.fixture
def own_etcd(etcd_factory):
    """A throwaway etcd with the default limits, for stopping mid-stream."""
    return etcd_factory()


@pytest.fixture
def own_rabbitmq(tmp_path):
    """A throwaway RabbitMQ node on free ports (nirvana.testing.OwnRabbitMQ), never the system's or the
    kit's, for resource alarms and a node stopped mid-stream; stopped at teardown."""
    from nirvana.testing import RABBITMQ_SERVER, OwnRabbitMQ

    need("rabbitmq-server (Debian's package, to run a throwaway node)", shutil.which("rabbitmqctl") is not None
         and os.path.exists(RABBITMQ_SERVER), hint="sudo apt-get install -y rabbitmq-server")
    node = OwnRabbitMQ(tmp_path / "rabbitmq")
    try:
        node.wait()
        yield node
    finally:
        node.stop()
