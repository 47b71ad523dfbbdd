"""``reset``: return the demo to a clean start, touching nothing but the kit's own data."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

from svc import Etcd, topology

from .. import rabbit, replay, services
from .._wait import poll, quiet
from ..errors import WaitTimeout
from ..settings import current
from . import carbon, statsd
from .carbon import whisper_dir
from .component import Progress
from .lifecycle import status
from .running import display


def etcd_prefix() -> str:
    """The kit's etcd prefix (ETCD_PREFIX as the services read it, :mod:`nirvana.settings`).

    Checked as svc checks it, so ``reset`` can never be pointed at the root of etcd (``/``) or at
    anything but one absolute key prefix: a bad value raises SettingError (exit status 2).
    """
    return current().etcd_prefix


def kit_queues(exchange: str | None = None) -> list[str]:
    """The queues that belong to the kit: the talk's services, any service the kit has started,
    and the dead letters. Nothing is guessed from names: on a shared RabbitMQ another
    application's ``events.*`` queue is not the kit's to purge."""
    exchange = exchange or current().exchange
    names = [topology.queue_name(service, exchange=exchange)
             for service in (*topology.DEFAULT_SERVICES, *services.known_names())]
    names.append(topology.dead_letter_queue(exchange))
    return sorted(set(names))


def etcd_client() -> Etcd:
    """svc's etcd client (gRPC: Debian's etcd has no JSON gateway) on the kit's endpoint."""
    return Etcd(list(current().etcd_endpoints), timeout=5, access=current().etcd_access)


def _with_etcd(call):
    client = etcd_client()
    try:
        return call(client)
    finally:
        client.close()


def delete_etcd_prefix(prefix: str | None = None) -> int:
    """Delete every etcd key under ``prefix/`` (default the kit's); returns how many."""
    return _with_etcd(lambda etcd: etcd.delete_prefix((prefix or etcd_prefix()) + "/"))


def count_etcd_prefix(prefix: str | None = None) -> int:
    """How many etcd keys are under ``prefix/`` (default the kit's)."""
    return _with_etcd(lambda etcd: etcd.count_prefix((prefix or etcd_prefix()) + "/"))


def whisper_files() -> list[Path]:
    """Every whisper file of the native stack's Graphite."""
    return sorted(whisper_dir().rglob("*.wsp")) if whisper_dir().exists() else []


IN_FLIGHT = 0.3        # seconds for a flush statsd computed before the deletion to reach carbon
CACHE_DRAINED = 5.0    # seconds for carbon to write what its cache holds of the deleted metrics


def forget_statsd_metrics(row, progress: Progress) -> None:
    """Delete every counter, timer and gauge statsd knows but its own, when it is the kit's.

    statsd sends every counter it has ever seen at each flush, a zero when idle (the kit leaves
    ``deleteCounters`` off: a plotted line stays at 0 rather than breaking into gaps, and a
    second without a point then means a flush Graphite lacks, which :mod:`nirvana.graphite`
    reports), so without this a deleted whisper file is back within a second.
    """
    if not row.healthy:
        progress("statsd        not answering: no counters to delete (start it with `./kit up`)")
        return
    if row.origin == "found running":
        progress("statsd        found running outside the kit (docker-compose?): its counters are not the kit's "
                 "to delete")
        return
    try:
        deleted = statsd.delete_metrics()
    except OSError as error:
        progress(f"statsd        did not answer on its admin port ({type(error).__name__}): no counters deleted")
        return
    time.sleep(IN_FLIGHT)
    progress(f"statsd        deleted {deleted['counters']} counters, {deleted['timers']} timers and "
             f"{deleted['gauges']} gauges (its own statsd.* kept)")


def await_carbon_written(files: list[Path], timeout: float = CACHE_DRAINED) -> None:
    """Wait until carbon's cache holds no point of these whisper files' metrics (up to ``timeout``
    seconds; a carbon that does not answer is not waited for): deleted before carbon writes
    them, each file would be created again."""
    metrics = [carbon.metric_of(path) for path in files]

    def cached() -> bool | None:   # None: carbon does not answer (nothing to wait for)
        try:
            return bool(carbon.cached(metrics))
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            return None

    try:
        poll(cached, lambda held: not held, what="carbon to write its cached points", timeout=timeout,
             progress=quiet, interval=0.1)
    except WaitTimeout:
        pass   # as before: the files are deleted anyway (carbon may create one again)


def reset(progress: Progress = print, exchange: str | None = None) -> None:
    """Return the stack to a clean demo state, touching nothing but the kit's own data.

    Purges the kit's queues, empties the log (deleted and declared again), deletes the etcd keys
    under the kit's prefix, deletes every metric statsd knows (but its own) and then the whisper
    files of the native stack (so no metric comes back, and a changed retention takes effect on the
    next point).
    Raises SettingError for a bad ETCD_PREFIX before anything is touched.
    """
    prefix = etcd_prefix()   # a bad ETCD_PREFIX stops the reset before anything is touched
    rows = {row.name: row for row in status()}
    # the single node's "rabbitmq" and "etcd", or the cluster's "rabbitmq-1".. and "etcd-1"..
    healthy = {kind: any(row.healthy for name, row in rows.items() if name.split("-")[0] == kind)
               for kind in ("rabbitmq", "etcd")}
    if healthy["rabbitmq"]:
        removed = rabbit.purge_queues(kit_queues(exchange))
        progress(f"rabbitmq      purged {', '.join(f'{q} ({n})' for q, n in removed.items()) or 'no kit queue'}")
        # a stream cannot be purged: the log is deleted and declared again (with the kit's retention)
        held = replay.reset_log(exchange)
        progress(f"rabbitmq      emptied the log {topology.log_name(exchange or current().exchange)} "
                 f"({f'offsets {held[0]}..{held[1]}' if held else 'it was empty'})")
    else:
        progress("rabbitmq      not answering: nothing purged (start it with `./kit up`)")
    if healthy["etcd"]:
        progress(f"etcd          deleted {delete_etcd_prefix(prefix)} keys under {prefix}/")
    else:
        progress("etcd          not answering: no keys deleted (start it with `./kit up`)")
    if rows["carbon"].origin == "found running":
        progress("graphite      found running outside the kit (docker-compose?): its whisper files are not "
                 "the kit's to delete; `docker compose down -v` clears them")
    forget_statsd_metrics(rows["statsd"], progress)
    files = whisper_files()
    if rows["carbon"].healthy and rows["carbon"].origin != "found running":
        await_carbon_written(files)
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted((p for p in whisper_dir().rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    if files:
        progress(f"graphite      deleted {len(files)} whisper files under {display(whisper_dir())}")
