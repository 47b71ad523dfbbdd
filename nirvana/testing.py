"""Test support (in the spirit of nameko.testing): an isolated world of names and real processes,
and in-memory stand-ins for unit tests of pure logic.

A ``World`` gives a test its own exchange, etcd prefix and service names (so queues, keys and
metric paths never collide with another test or the demo), runs ``python -m svc`` as real
subprocesses in their own process groups, and on ``close()`` kills them and removes every queue,
exchange and key it made. Every wait has a deadline and says what it waited for
(:func:`nirvana._wait.poll`); every process is started, awaited and stopped by
:mod:`nirvana.launcher`. ``OwnEtcd`` (nirvana/own_etcd.py) is a throwaway etcd to stop, freeze or
limit, ``OwnRabbitMQ`` (nirvana/own_rabbitmq.py) a throwaway RabbitMQ node. ``MemoryDedup`` and
``MemoryMeter`` (svc/stand_ins.py, the service's stand-ins, re-exported here) stand in for etcd and
statsd where a test checks the processor's logic alone (the way dramatiq's StubBroker stands in for
a broker); integration tests use the real ones. This is the kit's, never run by ``python -m svc``.
The fault injection hook (CRASH_AT, WORK_MS) is :class:`svc.faults.Faults`.
"""

import json
import os
import signal
import subprocess
import sys
import time
import unittest
import uuid
from pathlib import Path
from typing import Sequence

import pika

from svc import amqp, topology
from svc.etcd import Etcd
from svc.config import VARIABLES, parse_endpoints
from svc.consumer import connection_name
from svc.effects import count, counts_by_id
from svc.errors import DedupUnavailable, SvcError
from svc.publisher import Publisher
from svc.stand_ins import MemoryDedup, MemoryMeter

from . import launcher
from ._wait import poll, quiet
from .launcher import free_port
from .own_etcd import OwnEtcd
from .cuts import REFUSED, rabbitmqctl_refused
from .errors import KitError
from .render_api import post_render
from .own_rabbitmq import RABBITMQ_SERVER, RABBITMQCTL_TIMEOUT, OwnRabbitMQ, rabbitmqctl

START_TIMEOUT = 15.0
DEAD_CONSUMER_WAIT = 5.0   # seconds start() waits for a killed process's consumer to go
STOP_TIMEOUT = 10.0
# Seconds a World's connection may sit unused before channel() checks it with a round trip: the
# broker closes one that missed two heartbeats (60 s each), and only a read tells. bench_svc's
# dead-sibling pairs on a cluster left the bench's world idle that long (a StreamLostError at its
# next declaration, 2026-12-07).
IDLE_PROBE = 30.0


def wait_for(predicate, what: str, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; that value. WaitTimeout (a
    TimeoutError) naming ``what`` after ``timeout`` seconds (:func:`nirvana._wait.poll`)."""
    return poll(predicate, bool, what=what, timeout=timeout, progress=quiet, interval=interval)


class ServiceProcess:
    """One ``python -m svc`` subprocess, in its own session (:mod:`nirvana.launcher`); its output in a log file."""

    def __init__(self, service: str, env: dict, log_path: Path, argv: Sequence[str] | None = None) -> None:
        """``argv``: another way to run the service (default ``python -m svc``)."""
        self.service, self.log_path = service, log_path
        self.launched = launcher.start(launcher.Command(list(argv or [sys.executable, "-m", "svc"]), log_path, env,
                                                        name=service, append=True, header=False))
        self.popen = self.launched.popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.launched.signal(signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to its group, wait for the exit; TimeoutError (it is SIGKILLed) after ``timeout`` s.
        The exit status."""
        if launcher.stop([self.launched], timeout, kill_wait=STOP_TIMEOUT).get(self.pid) == "killed":
            raise TimeoutError(f"{self.service} (pid {self.pid}) did not stop within {timeout:g} s")
        return self.popen.wait(STOP_TIMEOUT)

    def kill(self) -> int:
        """SIGKILL to its group; the exit status. Raises subprocess.TimeoutExpired when it is not
        gone within STOP_TIMEOUT seconds."""
        self.signal(signal.SIGKILL)
        return self.popen.wait(STOP_TIMEOUT)



class RabbitmqctlRefused(KitError, unittest.SkipTest):
    """This user may not run the broker's rabbitmqctl (Debian's allows root and rabbitmq only): a
    test that needs it is skipped with this reason (pytest and unittest read SkipTest as a skip)."""

    def __init__(self, reason: str, purpose: str) -> None:
        """``reason``: rabbitmqctl's own words (one line); ``purpose``: what it was needed for, as
        "for `rabbitmqctl list_queues`" or "to set a policy"."""
        super().__init__(f"the broker's rabbitmqctl refuses this user ({reason}), needed {purpose}: run as root, "
                         "or stop that RabbitMQ so that ./kit up starts the kit's own")

class World:
    """An isolated set of names on the real RabbitMQ, etcd and statsd."""

    def __init__(self, amqp_url: str, etcd_endpoint: str, log_dir: Path, *,
                 statsd: tuple[str, int] = ("127.0.0.1", 8125),
                 rabbitmqctl: Sequence[str] = ("rabbitmqctl",), queue_type: str = "classic",
                 delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT) -> None:
        """``rabbitmqctl`` is the argv prefix that addresses the node answering at ``amqp_url``
        (the kit gives it: ``nirvana.stack.rabbitmq_node().ctl()``); the default is the machine's
        default node, which is the right one only when that node is the one at ``amqp_url``.
        ``queue_type`` and ``delivery_limit``: how this world's queues are declared (by it, its
        publishers and its services: QUEUE_TYPE, DELIVERY_LIMIT)."""
        tag = uuid.uuid4().hex[:8]
        self.amqp_url, self.etcd_endpoint, self.log_dir, self.statsd = amqp_url, etcd_endpoint, Path(log_dir), statsd
        self.rabbitmqctl = list(rabbitmqctl)
        self.queue_arguments = {"queue_type": queue_type, "delivery_limit": delivery_limit}
        self.exchange, self.prefix = f"t-{tag}", f"/t-{tag}"
        self.etcd = Etcd(parse_endpoints(etcd_endpoint), timeout=10.0)
        self.processes: list[ServiceProcess] = []
        self.services: set[str] = set()
        self.policies: set[str] = set()
        self.users: set[str] = set()
        self._connection = None
        self._used = 0.0   # when channel() was last called (time.monotonic(), s)

    # -- names and settings -------------------------------------------------------------------

    def service_name(self, base: str = "orders") -> str:
        """A unique service name (so its metric paths are new), its queue declared now."""
        name = f"t{uuid.uuid4().hex[:6]}_{base}"
        self.services.add(name)
        topology.declare(self.channel(), self.exchange, services=(name,), **self.queue_arguments)
        return name

    def env(self, service: str, *, enable_etcd: bool = False, **settings) -> dict:
        env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
        env.update(SERVICE_NAME=service, ENABLE_ETCD="true" if enable_etcd else "false", AMQP_URL=self.amqp_url,
                   ETCD_ENDPOINTS=self.etcd_endpoint, STATSD_HOST=self.statsd[0], STATSD_PORT=str(self.statsd[1]),
                   EVENTS_EXCHANGE=self.exchange, ETCD_PREFIX=self.prefix, LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
                   QUEUE_TYPE=self.queue_arguments["queue_type"],
                   DELIVERY_LIMIT=str(self.queue_arguments["delivery_limit"]))
        env.update({key.upper(): str(value) for key, value in settings.items()})
        return env

    # -- processes ----------------------------------------------------------------------------

    def start(self, service: str, *, replicas: int = 1, wait: bool = True, enable_etcd: bool = False,
              **settings) -> list[ServiceProcess]:
        """Start ``replicas`` processes of ``service``; wait until the queue has them as consumers."""
        self.services.add(service)
        # A process killed just now (CRASH_AT) may count as a consumer a moment longer, until the
        # broker has closed its connection: counted in, it would make the wait below expect one too
        # many. So the count is taken once the consumers are no more than the live processes (or
        # after DEAD_CONSUMER_WAIT, for consumers this world did not start).
        alive = sum(1 for process in self.processes if process.service == service and process.alive())
        try:
            wait_for(lambda: self.consumers(service) <= alive, "the consumers of dead processes gone",
                     DEAD_CONSUMER_WAIT)
        except TimeoutError:
            pass
        before = self.consumers(service)
        started = [ServiceProcess(service, self.env(service, enable_etcd=enable_etcd, **settings),
                                  self.log_dir / f"{service}-{len(self.processes) + i}.log")
                   for i in range(replicas)]
        self.processes.extend(started)
        if wait:
            self.wait_consumers(service, before + replicas, started)
        return started

    def wait_consumers(self, service: str, consumers: int, processes=(), timeout: float = START_TIMEOUT) -> None:
        """Wait until ``service``'s queue has ``consumers`` consumers while each of ``processes`` runs.
        Raises RuntimeError (with its log) when one exits, TimeoutError at the deadline."""
        try:
            launcher.wait_ready(lambda: self.consumers(service), lambda seen: seen >= consumers,
                                waiting=[process.launched for process in processes],
                                what=f"{consumers} consumers on {self.queue(service)}", timeout=timeout, interval=0.05)
        except launcher.Exited as exited:
            process = next(p for p in processes if p.launched is exited.launched)
            raise RuntimeError(f"{service} exited with {process.popen.returncode}:\n{process.log()}") from None

    # -- RabbitMQ -----------------------------------------------------------------------------

    def channel(self):
        """The world's own channel (declarations, depths, consumer counts), opened again as needed:
        after IDLE_PROBE seconds unused, one round trip checks that the broker has not closed it."""
        if self._connection is not None and self._connection.is_open \
                and time.monotonic() - self._used >= IDLE_PROBE and self._channel.is_open:
            try:
                self._channel.basic_qos(prefetch_count=0)   # a round trip: the answer, or the lost connection
            except amqp.BROKER_ERRORS:   # a lost connection (or channel): a new one below
                amqp.close_quietly(self._connection)
                self._connection = None
        self._used = time.monotonic()
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(amqp.parameters(self.amqp_url, name="nirvana.testing"))
            self._channel = self._connection.channel()
        elif not self._channel.is_open:  # a test's refused declaration closed it
            self._channel = self._connection.channel()
        return self._channel

    def queue(self, service: str) -> str:
        return topology.queue_name(service, self.exchange)

    def consumers(self, service: str) -> int:
        return self.channel().queue_declare(self.queue(service), passive=True).method.consumer_count

    def depth(self, service: str) -> int:
        """Messages ready in the service's queue (not those delivered and not yet acked)."""
        return self.channel().queue_declare(self.queue(service), passive=True).method.message_count

    def publisher(self, *services: str) -> Publisher:
        return Publisher(self.amqp_url, self.exchange, services=services, **self.queue_arguments)

    def publish(self, service: str, event, count: int = 1, **options):
        result = self.publisher(service).publish(event, count=count, **options)
        assert result.ok, result
        return result

    def dead_letters_waiting(self) -> int:
        """How many dead letters wait in this world's dead-letter queue (they stay there)."""
        return self.channel().queue_declare(topology.dead_letter_queue(self.exchange), passive=True).method.message_count

    def dead_letters(self) -> list[tuple[bytes, dict]]:
        """Take every dead letter of this world: ``[(body, headers)]``."""
        letters = []
        while True:
            method, properties, body = self.channel().basic_get(topology.dead_letter_queue(self.exchange), auto_ack=True)
            if method is None:
                return letters
            letters.append((body, dict(properties.headers or {})))

    def close_connections(self, process: ServiceProcess) -> int:
        """Close the broker connections of one service process (as an operator would with
        ``rabbitmqctl close_connection``); how many were closed."""
        out = self._rabbitmqctl("list_connections", "pid", "client_properties")
        marker = connection_name(process.service, process.pid)
        pids = [line.split("\t", 1)[0] for line in out.splitlines() if f'"{marker}"' in line]
        for pid in pids:
            self._rabbitmqctl("close_connection", pid, "closed by a test")
        return len(pids)

    def _rabbitmqctl(self, *args: str) -> str:
        """``rabbitmqctl -q *args`` against the node this world's broker is (its stdout). Raises
        RabbitmqctlRefused (a skip, for pytest) when this user may not run it there, as a normal user
        beside Debian's system RabbitMQ; subprocess.CalledProcessError for any other failure."""
        try:
            return subprocess.run([*self.rabbitmqctl, "-q", *args], capture_output=True, text=True,
                                  timeout=RABBITMQCTL_TIMEOUT, check=True).stdout
        except (subprocess.CalledProcessError, OSError) as error:
            if os.geteuid() != 0 and rabbitmqctl_refused(error):
                said = f"{getattr(error, 'stdout', '') or ''}\n{getattr(error, 'stderr', '') or ''}".strip()
                lines = (said or str(error)).splitlines()
                reason = [line for line in lines if any(word in line for word in REFUSED)] or lines[-1:]
                raise RabbitmqctlRefused(reason[0], f"for `rabbitmqctl {args[0]}`") from None
            raise

    def set_policy(self, suffix: str, pattern: str, definition: dict, apply_to: str = "queues") -> str:
        """A broker policy named after this world (removed by ``close``); its name."""
        name = f"{self.exchange}-{suffix}"
        self._rabbitmqctl("set_policy", "--apply-to", apply_to, "--priority", "100", name, pattern, json.dumps(definition))
        self.policies.add(name)
        return name

    def clear_policy(self, name: str) -> None:
        self._rabbitmqctl("clear_policy", name)
        self.policies.discard(name)

    def publish_as_another_user(self, body: bytes, properties: pika.BasicProperties) -> str:
        """Publish ``body`` to this world's exchange (routing key ``foo``) as a user of its own, made
        now with every permission on the vhost (deleted by ``close``), its ``user_id`` set to that
        user (the broker checks it against the connection's): the user's name."""
        user = f"{self.exchange}-user"
        if user not in self.users:
            self._rabbitmqctl("add_user", user, "pw")
            self.users.add(user)
            self._rabbitmqctl("set_permissions", user, ".*", ".*", ".*")
        scheme, rest = self.amqp_url.split("://", 1)
        connection = pika.BlockingConnection(amqp.parameters(f"{scheme}://{user}:pw@{rest.rpartition('@')[2]}"))
        try:
            properties.user_id = user
            connection.channel().basic_publish(self.exchange, "foo", body, properties)
        finally:
            connection.close()
        return user

    # -- etcd ---------------------------------------------------------------------------------

    def effects(self, service: str, event_id: str | None = None) -> int:
        return count(self.etcd, service, event_id, prefix=self.prefix)

    def effects_by_id(self, service: str) -> dict[str, int]:
        return counts_by_id(self.etcd, service, prefix=self.prefix)

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process (SIGKILL by group), then remove queues, exchanges and keys.

        Each step runs whatever the one before did: a process that will not die does not leave
        the world's queues and keys behind. A process that would not die is raised at the end
        (it is still running); a broker or etcd that went away is only reported, so the test's
        own error is not hidden."""
        stuck = []
        for process in self.processes:
            try:
                if process.alive():
                    process.kill()
            except (subprocess.TimeoutExpired, OSError) as error:
                stuck.append(f"{process.service} (pid {process.pid}): {error}")
        for policy in sorted(self.policies):
            try:
                self.clear_policy(policy)
            except (subprocess.SubprocessError, OSError) as error:
                print(f"nirvana.testing: could not clear the policy {policy}: {error}", file=sys.stderr)
        for user in sorted(self.users):
            try:
                self._rabbitmqctl("delete_user", user)
            except (subprocess.SubprocessError, OSError) as error:
                print(f"nirvana.testing: could not delete the user {user}: {error}", file=sys.stderr)
        try:
            topology.delete(self.channel(), self.exchange, services=sorted(self.services))
            self._connection.close()
        except (*amqp.BROKER_ERRORS, SvcError) as error:
            print(f"nirvana.testing: could not delete the queues of {self.exchange}: {error!r}", file=sys.stderr)
        try:
            self.etcd.delete_prefix(self.prefix + "/")
        except DedupUnavailable as error:
            print(f"nirvana.testing: could not delete {self.prefix}/ from etcd: {error}", file=sys.stderr)
        finally:
            self.etcd.close()
        if stuck:
            raise TimeoutError(f"svc processes did not die: {'; '.join(stuck)}")


def graphite_total(graphite_url: str, target: str, since: str = "-5min") -> float:
    """The sum of a Graphite series (``stats_counts.<name>``, ``stats.timers.<name>.count``) from
    ``since`` (a render API time: ``-5min``) to now, through :func:`nirvana.render_api.post_render`
    (a series read while carbon creates its file is asked again). Raises requests.HTTPError for an
    error answer, GraphiteUnavailable when nothing answers."""
    answer = post_render(graphite_url, [("target", target), ("from", since), ("format", "json")])
    answer.raise_for_status()
    return sum(value or 0 for item in answer.json() for value, _ in item["datapoints"])


__all__ = [
    # real processes and names on the real stack
    "World", "ServiceProcess", "OwnEtcd", "OwnRabbitMQ", "RABBITMQ_SERVER", "free_port", "rabbitmqctl",
    "RabbitmqctlRefused",
    "graphite_total", "wait_for",
    # in-memory stand-ins for unit tests of pure logic
    "MemoryDedup", "MemoryMeter",
]
