"""Replay from the log, side by side in one run; prints every round and the ratios.

    .venv/bin/python bench/bench_replay.py [--events 50000] [--repeat 5] [--prefetch 1500]
                                           [--rebuild-events 100000] [--kills 10] [--amqp-url URL] [--etcd HOST:PORT]

- read: a bare pika stream reader (consume from ``first``, ack, count: the yardstick) and
  ``python -m svc`` with SOURCE=log and dedup on, building its read model with a tracking record in
  each window's etcd transaction, each reading the same log from its first event to its last
  (goal: svc >= 0.5x the bare reader). Each round runs yardstick, svc, yardstick (the order of the
  two yardstick runs around svc alternates nothing: svc's ratio is its rate over their mean); svc's
  rate is timed from its "reading the log" line to its tracking record at the log's last offset.
- rebuild: ``--rebuild-events`` events read into one version undisturbed, then into another by a
  reader SIGKILLed ``--kills`` times (started again each time; each kill at a random moment within
  0.3 s after it has committed a window since its start, so every run moves on); both digests
  (SHA-256 over the view's RFC 8785 JSON) must be equal, and no event applied twice.

Everything runs under its own exchange and etcd prefix, removed at the end (nirvana.testing.World).
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pika  # noqa: E402
import psutil  # noqa: E402

from svc import amqp, projection, topology  # noqa: E402
from svc.config import DEFAULT_PREFETCH  # noqa: E402
from svc.publisher import Publisher  # noqa: E402
from svc.stream import OFFSET_HEADER, log_end  # noqa: E402
from nirvana.testing import ServiceProcess, World, wait_for  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ETCD_ENDPOINT = "127.0.0.1:2379"
GOAL = 0.5


def fill_log(world: World, events: int) -> int:
    """Publish ``events`` new_order events (fresh ids; a sku and a customer per block of 500) into
    the world's log; the log's last offset."""
    topology.declare_log(topology.declare(world.channel(), world.exchange, services=()), world.exchange)
    with Publisher(world.amqp_url, world.exchange, services=()) as publisher:
        for block, start in enumerate(range(0, events, 500)):
            result = publisher.publish({"type": "new_order", "id": f"e-{block}",
                                        "args": {"sku": f"sku-{block % 50}", "customer": f"c-{block % 37}"}},
                                       count=min(500, events - start), fresh_ids=True)
            assert result.ok, result
    return log_end(world.amqp_url, world.exchange)


def bare_reader(world: World, end: int, prefetch: int) -> tuple[float, float]:
    """Events/s of a bare pika stream reader from ``first`` to offset ``end`` (ack every delivery
    as credit, multiple every 100), and its CPU microseconds per event."""
    connection = pika.BlockingConnection(amqp.parameters(world.amqp_url))
    seen = [0, -1]
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_message(channel, method, properties, body):
            seen[0] += 1
            seen[1] = int(properties.headers[OFFSET_HEADER])
            if seen[0] % 100 == 0 or seen[1] == end:
                channel.basic_ack(method.delivery_tag, multiple=True)

        started, cpu = time.perf_counter(), time.process_time()
        channel.basic_consume(topology.log_name(world.exchange), on_message, arguments={OFFSET_HEADER: "first"})
        deadline = time.monotonic() + 600
        while seen[1] < end and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        amqp.close_quietly(connection)  # pika rejects what it buffered; a stream answers by closing the connection
    return seen[0] / took, cpu * 1e6 / seen[0]


def start_reader(world: World, service: str, prefetch: int, **settings) -> ServiceProcess:
    env = world.env(service, enable_etcd=True, source="log", log_offset="first", prefetch=prefetch,
                    log_level="INFO", **settings)
    process = ServiceProcess(service, env, world.log_dir / f"{service}-{len(world.processes)}.log")
    world.processes.append(process)
    return process


def svc_reader(world: World, end: int, events: int, prefetch: int) -> tuple[float, float]:
    """Events/s of ``python -m svc`` SOURCE=log from its "reading the log" line to its tracking record
    at ``end``, and its CPU microseconds per event over that time (user + system, all its threads)."""
    service = world.service_name("replay")
    process = start_reader(world, service, prefetch)
    wait_for(lambda: "reading the log" in process.log() or not process.alive(), "svc reading the log", 30, 0.01)
    started, before = time.perf_counter(), psutil.Process(process.pid).cpu_times()
    wait_for(lambda: projection.read_tracking(world.etcd, world.prefix, service, 1) == end or not process.alive(),
             f"svc's tracking record at {end}", 600, 0.02)
    took, after = time.perf_counter() - started, psutil.Process(process.pid).cpu_times()
    assert process.alive(), process.log()
    process.stop()
    return events / took, (after.user + after.system - before.user - before.system) * 1e6 / events


def rebuild(world: World, end: int, kills: int, prefetch: int) -> None:
    """Version 1 undisturbed, version 2 under ``kills`` SIGKILLs; prints both digests and the counts."""
    service = world.service_name("rebuild")

    def build(version: int, kills: int) -> tuple[str, int, float]:
        started, killed = time.perf_counter(), 0
        while True:
            at_start = projection.read_tracking(world.etcd, world.prefix, service, version)
            process = start_reader(world, service, prefetch, view_version=version)
            if killed < kills:
                # killed mid-stream: once it has committed a window since it started, at a random moment
                wait_for(lambda start=at_start: projection.read_tracking(world.etcd, world.prefix, service, version)
                         != start, f"version {version} moving on", 120, 0.01)
                time.sleep(random.uniform(0.0, 0.3))
                if projection.read_tracking(world.etcd, world.prefix, service, version) != end:
                    process.kill()
                    killed += 1
                    print(f"  version {version}: SIGKILL {killed} at tracking record "
                          f"{projection.read_tracking(world.etcd, world.prefix, service, version)}", flush=True)
                    continue
            wait_for(lambda: projection.read_tracking(world.etcd, world.prefix, service, version) == end,
                     f"version {version} at {end}", 900, 0.1)
            process.stop()
            view = projection.read_view(world.etcd, world.prefix, service, version)
            return projection.digest(view), killed, time.perf_counter() - started

    calm, _, calm_s = build(1, 0)
    stormy, killed, stormy_s = build(2, kills)
    twice = [projection.applied_twice(world.etcd, world.prefix, service, v) for v in (1, 2)]
    print(f"rebuild of {end + 1} offsets: undisturbed {calm_s:.1f} s digest {calm[:16]}; under {killed} SIGKILLs "
          f"{stormy_s:.1f} s digest {stormy[:16]}; digests {'EQUAL' if calm == stormy else 'DIFFER'}; "
          f"events applied twice: {twice[0]} and {twice[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH)
    parser.add_argument("--rebuild-events", type=int, default=100000, help="0: no rebuild")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--amqp-url", default=AMQP_URL)
    parser.add_argument("--etcd", default=ETCD_ENDPOINT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        world = World(args.amqp_url, args.etcd, Path(logs))
        try:
            end = fill_log(world, args.events)
            print(f"log of {args.events} events, offsets 0..{end}", flush=True)
            ratios, cpus, bare_cpus, svc_cpus = [], [], [], []
            for round_ in range(1, args.repeat + 1):
                (before, bare_cpu), (svc, svc_cpu), (after, bare_cpu2) = (
                    bare_reader(world, end, args.prefetch), svc_reader(world, end, args.events, args.prefetch),
                    bare_reader(world, end, args.prefetch))
                ratios.append(svc / statistics.mean((before, after)))
                cpus.append(svc_cpu / statistics.mean((bare_cpu, bare_cpu2)))
                bare_cpus += [bare_cpu, bare_cpu2]
                svc_cpus.append(svc_cpu)
                print(f"round {round_} (load {os.getloadavg()[0]:.1f}): bare {before:.0f}/s, svc {svc:.0f}/s, bare "
                      f"{after:.0f}/s: ratio {ratios[-1]:.2f}; CPU us per event: bare {bare_cpu:.1f}, svc "
                      f"{svc_cpu:.1f}, bare {bare_cpu2:.1f} ({cpus[-1]:.2f}x)", flush=True)
            print(f"svc reading the log with its tracking record: median {statistics.median(ratios):.2f}x, lowest "
                  f"{min(ratios):.2f}x of a bare pika stream reader (goal >= {GOAL}x: "
                  f"{'met' if min(ratios) >= GOAL else 'NOT met'} in every round); CPU per event (median): svc "
                  f"{statistics.median(svc_cpus):.1f} us, bare {statistics.median(bare_cpus):.1f} us, "
                  f"{statistics.median(cpus):.2f}x", flush=True)
        finally:
            world.close()
        if args.rebuild_events:
            world = World(args.amqp_url, args.etcd, Path(logs))
            try:
                rebuild(world, fill_log(world, args.rebuild_events), args.kills, args.prefetch)
            finally:
                world.close()


if __name__ == "__main__":
    main()
