"""``reset``: return the demo to a clean start, touching nothing but the kit's own data."""

from __future__ import annotations

from pathlib import Path

from svc import Etcd, topology

from .. import rabbit, replay, services
from ..settings import current
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
    return Etcd(list(current().etcd_endpoints), timeout=5)


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


def reset(progress: Progress = print, exchange: str | None = None) -> None:
    """Return the stack to a clean demo state, touching nothing but the kit's own data.

    Purges the kit's queues, empties the log (deleted and declared again), deletes the etcd keys under the kit's prefix, and deletes the whisper
    files of the native stack (so a changed retention takes effect on the next point).
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
    files = whisper_files()
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted((p for p in whisper_dir().rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    if files:
        progress(f"graphite      deleted {len(files)} whisper files under {display(whisper_dir())}")
