"""CPU per event of each process of a run, and publish-to-effect latency one event at a time.

Used by bench/bench_svc.py. A rate on a shared 2-core machine says how the cores were shared; CPU
time per event says what each process's work costs, which other processes' load changes far less:

- :class:`Stack` finds the processes of a broker and an etcd by the TCP ports they listen on
  (in this network namespace: a private stack's, not another one's on the same ports), and reads
  their CPU time (user + system, every thread, seconds) with psutil;
- :func:`latencies` publishes one event at a time to an idle ``python -m svc`` and times each to
  the moment etcd's watch shows its effect record (milliseconds).
"""

import json
import os
import queue
import statistics
import threading
import time
from urllib.parse import urlsplit

import pika
import psutil

from svc import etcd as _etcd, keys
from nirvana.testing import World

from nirvana.cost import bare_pika, fill

ROLES = ("publisher", "rabbitmq", "consumer", "etcd")   # the columns of the budget, in order


class Stack:
    """The broker and etcd processes of a run, found by their listening ports (``amqp_urls``:
    ``amqp://`` URLs; ``etcd_endpoints``: ``host:port[,host:port...]``). Raises LookupError if a
    port has no listening process here (psutil reads this network namespace's sockets), or one of
    another user this user cannot read (the machine's RabbitMQ, to a normal user)."""

    def __init__(self, amqp_urls, etcd_endpoints: str) -> None:
        ports = {urlsplit(url).port or 5672: "rabbitmq" for url in amqp_urls}
        ports.update({int(endpoint.rsplit(":", 1)[1]): "etcd" for endpoint in etcd_endpoints.split(",")})
        self.pids: dict[str, set[int]] = {"rabbitmq": set(), "etcd": set()}
        hidden = set()   # listening, but the process is another user's: psutil gives no pid
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports:
                if connection.pid:
                    self.pids[ports[connection.laddr.port]].add(connection.pid)
                else:
                    hidden.add(connection.laddr.port)
        missing = sorted(port for port, role in ports.items() if not self.pids[role])
        if set(missing) & hidden:
            raise LookupError(f"port(s) {sorted(set(missing) & hidden)} belong to another user's process (the machine's "
                              "RabbitMQ?), whose CPU this user cannot read: run the bench as root, or on the kit's own "
                              "stack (`./kit up`)")
        if missing:
            raise LookupError(f"no process listens on port(s) {missing} here: is the stack up in this namespace?")

    def cpu(self, **others: int | None) -> dict[str, float]:
        """CPU seconds so far of the broker's and etcd's processes, and of ``others`` ({role: pid};
        a None pid counts 0)."""
        found = {role: sum(_cpu(pid) for pid in pids) for role, pids in self.pids.items()}
        found.update({role: _cpu(pid) if pid else 0.0 for role, pid in others.items()})
        return found


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def timed_fill(world: World, service: str, events: int, stack: Stack | None, budget: dict | None) -> None:
    """:func:`fill`, adding to ``budget`` the CPU µs per event of the publisher (this process) and
    the broker while it runs."""
    before = stack.cpu(publisher=os.getpid()) if stack and budget is not None else None
    fill(world, service, events)
    if before is not None:
        budget.update(per_event(before, stack.cpu(publisher=os.getpid()), events))


def bare_rate(world: World, service: str, events: int, prefetch: int, stack: Stack | None = None,
              budget: dict | None = None) -> float:
    """nirvana.cost.bare_pika, with its CPU µs per event by process in ``budget`` (the consumer is
    this process)."""
    timed_fill(world, service, events, stack, budget)
    before = stack.cpu(consumer=os.getpid()) if stack and budget is not None else None
    rate = bare_pika(world, service, events, prefetch, filled=True)
    if before is not None:
        add(budget, per_event(before, stack.cpu(consumer=os.getpid()), events))
    return rate


def add(budget: dict, more: dict) -> None:
    for role, micros in more.items():
        budget[role] = budget.get(role, 0.0) + micros


def cpu_line(budgets: dict) -> str:
    """Each run's CPU µs per event of all processes, [of the consumer; of etcd], by contender."""
    def each(runs: list[dict], role: str | None = None) -> str:
        return " ".join(f"{sum(run.values()) if role is None else run[role]:.0f}" for run in runs)
    return "; ".join(f"{name} {each(runs)} [{each(runs, 'consumer')}; {each(runs, 'etcd')}]"
                     for name, runs in budgets.items() if runs)


def per_event(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, float]:
    """Microseconds of CPU per event of each role between two :meth:`Stack.cpu` readings."""
    return {role: (after[role] - before[role]) / events * 1e6 for role in after}


def budget_table(budgets: dict[str, list[dict[str, float]]], labels: dict[str, str]) -> str:
    """The median over rounds of each contender's CPU µs per event, by process, and each one's
    extra over the first contender (the yardstick): where the extra cost is paid."""
    medians = {name: {role: statistics.median(b.get(role, 0.0) for b in runs) for role in ROLES}
               for name, runs in budgets.items() if runs}
    if not medians:
        return ""
    header = f"{'CPU µs per event (median)':32}" + "".join(f"{role:>11}" for role in ROLES) + f"{'total':>9}"
    lines = [header]
    first = next(iter(medians.values()))
    for name, cells in medians.items():
        lines.append(f"{labels[name]:32}" + "".join(f"{cells[role]:11.1f}" for role in ROLES)
                     + f"{sum(cells.values()):9.1f}")
    for name, cells in list(medians.items())[1:]:
        extra = {role: cells[role] - first[role] for role in ROLES}
        lines.append(f"{'  extra of ' + name:32}" + "".join(f"{extra[role]:+11.1f}" for role in ROLES)
                     + f"{sum(extra.values()):+9.1f}")
    lines.append("  publisher: the bench's svc.Publisher filling the queue; rabbitmq: the broker's processes over fill "
                 "and drain; consumer: the bare loop (the bench's own process) or python -m svc after its start "
                 "(its CPU at consuming, measured on an idle start, taken off); etcd: every member")
    return "\n".join(lines)


def latencies(world: World, service: str, enable_etcd: bool, samples: int, event: dict,
              round_trips: list | None = None) -> list[float]:
    """Milliseconds from each publish to the moment etcd's watch shows the event's effect record,
    one event at a time on an idle ``python -m svc`` (``LOG_LEVEL=WARNING``); before each, one
    etcd round trip (a one-key transaction, ms) is added to ``round_trips``, so both are measured
    on the same machine at the same moments. Raises TimeoutError if an effect does not show
    within 10 s."""
    [process] = world.start(service, enable_etcd=enable_etcd, log_level="WARNING")
    base = keys.effects_prefix(world.prefix, service).encode()
    revision = _revision(world, base)
    seen: queue.Queue = queue.Queue()
    watch = world.etcd.watch_prefix(base, revision + 1)

    def follow() -> None:
        for is_put, _key, _value, _revision in watch:
            if is_put:
                seen.put(time.perf_counter())

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    channel = connection.channel()
    found = []
    try:
        for i in range(samples):
            body = json.dumps(dict(event, id=f"latency-{service}-{i}")).encode()
            time.sleep(0.01)   # idle between events: each is a lone one, not part of a window
            if round_trips is not None:
                round_trips.append(round_trip_ms(world.etcd))
            started = time.perf_counter()
            channel.basic_publish(world.exchange, "latency", body)
            try:
                found.append((seen.get(timeout=10) - started) * 1000)
            except queue.Empty:
                raise TimeoutError(f"no effect of event {i} of {service} within 10 s") from None
    finally:
        connection.close()
        watch.cancel()
        process.stop()
    return found


def round_trip_ms(etcd) -> float:
    """Milliseconds of one transaction reading one key, as a claim does (nirvana.cost.etcd_round_trip_ms's probe)."""
    request = _etcd.new_txn()
    _etcd.add_get(request.success, b"/nirvana/cost-probe")
    started = time.perf_counter()
    etcd.txn(request)
    return (time.perf_counter() - started) * 1000


def _revision(world: World, prefix: bytes) -> int:
    pages = world.etcd.scan_prefix(prefix, 1)
    try:
        while True:
            next(pages)
    except StopIteration as end:
        return end.value


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
