"""Reading events back, as the kit shows it: the log's state, a projection rebuilt beside the one in
use and switched to in one step, its digest.

A reader of the log is ``python -m svc`` with ``SOURCE=log`` (svc/replay.py); its read model lives
in etcd under ``<prefix>/replay/<service>/v<N>/`` and ``current`` names the version in use
(svc/projection.py). A rebuild starts a reader of a new version from the first event, waits until
its tracking record reaches the log's last offset, then puts the new version in ``current`` in
one transaction guarded by the old value (a rebuild that lost a race to another says so). It may
SIGKILL the reader along the way and start it again: the tracking record, written with the
effects, makes the result the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import subprocess
import time

from svc import Etcd, amqp, etcd as _etcd, projection, topology
from svc.config import Config
from svc.errors import SvcError
from svc.stream import log_end, log_start, takes_reader

from . import services
from ._wait import Progress, poll, quiet, until_or_stalled
from .errors import KitError, RabbitUnavailable, WaitTimeout
from .rabbit import _connection
from .settings import current

REBUILD_TIMEOUT = 120.0   # seconds a rebuild may take to reach the log's end
STALL = 20.0              # seconds a rebuild's reader may go without a commit before it is started again
CTL_TIMEOUT = 30.0
HELD_TIMEOUT = 0.5        # seconds to wait for the first delivery of the log before calling it empty


class RebuildError(KitError):
    """A rebuild did not finish: what is missing, in one line."""


@dataclasses.dataclass(frozen=True)
class Rebuild:
    """What a rebuild did: the version built and switched to, its digest, the kills it survived."""

    service: str
    version: int
    previous: int | None
    digest: str
    end: int
    kills: int
    applied_twice: int
    seconds: float


def _client() -> Etcd:
    """svc's etcd client on the kit's endpoints (as nirvana.stack.reset's)."""
    return Etcd(list(current().etcd_endpoints), timeout=5)


def log_arguments() -> dict:
    """The log's arguments as the kit declares it: LOG_MAX_AGE, LOG_MAX_BYTES and LOG_SEGMENT_BYTES
    of the environment, read as svc reads them (svc.config)."""
    env = {name: os.environ[name] for name in ("LOG_MAX_AGE", "LOG_MAX_BYTES", "LOG_SEGMENT_BYTES") if name in os.environ}
    return Config.from_env({**env, "SERVICE_NAME": topology.DEFAULT_SERVICES[0]}).log_retention


def log_status(ctl: list[str], exchange: str | None = None) -> str:
    """One line for ``./kit status``: the log, the offsets it keeps, its retention as declared
    (read with the RabbitMQ tool prefix ``ctl``, ``nirvana.stack.rabbitmq_node().ctl()``)."""
    exchange = exchange or current().exchange
    name = topology.log_name(exchange)
    try:
        with _connection(None, f"reading {name}") as connection:
            if amqp.passive_declare(connection.channel(), name) is None:
                return f"log           {name}: not declared yet (the first service or publisher declares it)"
        held = _held(exchange)
    except (RabbitUnavailable, SvcError) as error:
        return f"log           {name}: {error}"
    events = f"offsets {held[0]}..{held[1]} kept" if held else "empty"
    return f"log           {name}: {events}, retention {_retention(ctl, name)}"


def _held(exchange: str) -> tuple[int, int] | None:
    """The first and last offsets the log keeps, None if it is empty."""
    url = current().amqp_url
    # an empty log answers nothing: this costs its whole timeout, kept short (reset runs at each chapter's start)
    first = log_start(url, exchange, timeout=HELD_TIMEOUT)
    return None if first is None else (first, log_end(url, exchange, timeout=HELD_TIMEOUT))


def _retention(ctl: list[str], name: str) -> str:
    """The retention the log was declared with, read with rabbitmqctl; the kit's setting when
    rabbitmqctl cannot tell (a broker found running with another cookie)."""
    try:
        out = subprocess.run([*ctl, "-q", "list_queues", "name", "arguments"], capture_output=True,
                             text=True, timeout=CTL_TIMEOUT, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        out = ""
    for line in out.splitlines():
        queue, _, arguments = line.partition("\t")
        if queue == name:
            age = _argument(arguments, "x-max-age")
            size = _argument(arguments, "x-max-length-bytes")
            return f"max-age {age or 'none'}, max-bytes {size or 'none'} (as declared)"
    wanted = log_arguments()
    return (f"max-age {wanted.get('x-max-age', 'none')}, max-bytes {wanted.get('x-max-length-bytes', 'none')} "
            "(the kit's setting; rabbitmqctl could not tell what it was declared with)")


def _argument(arguments: str, name: str) -> str:
    """The value of ``name`` in rabbitmqctl's ``[{"x-max-age","7D"},{"x-max-length-bytes",1000000000}]``."""
    marker = f'{{"{name}",'
    if marker not in arguments:
        return ""
    return arguments.split(marker, 1)[1].split("}", 1)[0].strip('"')


def reset_log(exchange: str | None = None, *, max_bytes: int | None = None,
              segment_bytes: int | None = None) -> tuple[int, int] | None:
    """Empty the log: delete it and declare it again (a stream cannot be purged) with the kit's
    retention, or, given ``max_bytes`` or ``segment_bytes``, with those (bytes) and no maximum age
    (chapter 10's small log); the first and last offsets it held (None if empty). Offsets are not a count: a
    stream's segments take offsets of their own. RabbitUnavailable (one line) if RabbitMQ does not answer."""
    exchange = exchange or current().exchange
    name = topology.log_name(exchange)
    with _connection(None, f"emptying {name}") as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        # a stream's counts lag by seconds (and the delete's is 0): its offsets say; None: no log yet
        held = None if amqp.passive_declare(connection.channel(), name) is None else _held(exchange)
        channel.queue_delete(name)
        small = max_bytes is not None or segment_bytes is not None
        topology.declare_log(channel, exchange, topology.log_arguments("", max_bytes or 0, segment_bytes or 0)
                             if small else log_arguments())
    # A stream declared a moment ago may have no member up to read from: RabbitMQ refuses a reader
    # (406 "does not have a replica on the local node") or takes it and then closes its connection
    # (541 INTERNAL_ERROR: svc.stream.member_away). The log is handed over once it takes one.
    poll(lambda: _takes_reader(exchange), bool, what=f"{name}, declared again, to take a reader (no 406 no-replica, "
         "no 541 INTERNAL_ERROR)", timeout=CTL_TIMEOUT, progress=quiet)
    return held


def _takes_reader(exchange: str) -> bool:
    """False only while the log's member is away (svc.stream.takes_reader); any other answer, such
    as no log on a broker without streams, is for the readers to tell."""
    try:
        return takes_reader(current().amqp_url, exchange)
    except SvcError:
        return True


def version_in_use(service: str) -> int | None:
    settings, etcd = current(), _client()
    try:
        return projection.read_current(etcd, settings.etcd_prefix, service)
    finally:
        etcd.close()


def digest(service: str, version: int | None = None) -> str:
    """The content digest of a version of ``service``'s read model (the one in use by default)."""
    settings, etcd = current(), _client()
    try:
        version = version or projection.read_current(etcd, settings.etcd_prefix, service)
        if version is None:
            raise RebuildError(f"{service} has no read model yet: start it with SOURCE=log, or rebuild it")
        return projection.digest(projection.read_view(etcd, settings.etcd_prefix, service, version))
    finally:
        etcd.close()


def snapshot(service: str) -> int:
    """Copy the version in use of ``service``'s read model (done ids, view, tracking record, read at
    one etcd revision) to a snapshot; the offset it stands at. RebuildError if there is none yet."""
    settings, etcd = current(), _client()
    prefix = settings.etcd_prefix
    try:
        version = projection.read_current(etcd, prefix, service)
        if version is None:
            raise RebuildError(f"{service} has no read model to snapshot yet: start it with SOURCE=log, or rebuild it")
        base = projection.version_prefix(prefix, service, version).encode()
        kept = [(key[len(base):], value) for page in etcd.scan_prefix(base, page=projection.RECORD_PAGE) for key, value in page
                if not key[len(base):].startswith(b"effects/")]   # one revision: a consistent copy
        position = dict(kept).get(b"tracking")
        if position is None:
            raise RebuildError(f"version {version} of {service} has applied no event yet: nothing to snapshot")
        target = projection.snapshot_prefix(prefix, service, int(position)).encode()
        _put_all(etcd, [(target + key, value) for key, value in kept if key != b"tracking"])
        _put_all(etcd, [(target + b"tracking", position)])   # last: a snapshot without it is not whole
        _put_all(etcd, [(projection.snapshot_prefix(prefix, service).encode() + b"latest", position)])
        return int(position)
    finally:
        etcd.close()


def _put_all(etcd, items: list[tuple[bytes, bytes]], chunk: int = 100, max_bytes: int = 1 << 20) -> None:
    """Put ``items`` in transactions of at most ``chunk`` puts and about ``max_bytes`` (etcd's
    --max-request-bytes is 1.5 MiB by default; a done record may be near 1 MiB alone)."""
    request, size = _etcd.new_txn(), 0
    for key, value in items:
        if request.success and (len(request.success) == chunk or size + len(key) + len(value) > max_bytes):
            etcd.txn(request)
            request, size = _etcd.new_txn(), 0
        _etcd.add_put(request.success, key, value)
        size += len(key) + len(value)
    if request.success:
        etcd.txn(request)


def _latest_snapshot(etcd, prefix: str, service: str) -> int | None:
    value = etcd.get(projection.snapshot_prefix(prefix, service).encode() + b"latest")
    return int(value) if value else None


def _start_from_snapshot(etcd, prefix: str, service: str, offset: int, version: int) -> None:
    """Copy the snapshot at ``offset`` into ``version`` (its tracking record last)."""
    source = projection.snapshot_prefix(prefix, service, offset).encode()
    target = projection.version_prefix(prefix, service, version).encode()
    items = [(target + key[len(source):], value) for page in etcd.scan_prefix(source, page=projection.RECORD_PAGE) for key, value in page]
    _put_all(etcd, [item for item in items if not item[0].endswith(b"/tracking")])
    _put_all(etcd, [item for item in items if item[0].endswith(b"/tracking")])


def rebuild(service: str, *, kills: int = 0, kill_every: float = 0.5, mid_work: bool = False,
            timeout: float = REBUILD_TIMEOUT, from_snapshot: bool = False, progress: Progress = print) -> Rebuild:
    """Rebuild ``service``'s read model from the first event of the log into a new version beside the
    one in use, then switch to it in one step. With ``kills``, the reader is SIGKILLed that many
    times (one every ``kill_every`` seconds or so, at random within it) and started again; with
    ``mid_work``, each SIGKILL also waits until the reader has committed a window since its start
    (so none lands before it reads; fewer kills when it reaches the log's end first). A reader
    that commits nothing for STALL seconds is SIGKILLed and started again (not counted). Once retention has dropped the log's first events, or with ``from_snapshot``, the new version
    starts from the latest snapshot (``snapshot``) and reads the rest of the log after it.

    Raises RebuildError (one line) when the log is empty, retention dropped events no snapshot
    covers, the reader does not reach the log's end within ``timeout`` seconds, or another rebuild
    switched first."""
    settings, etcd = current(), _client()
    name = f"{service}-rebuild"
    started = time.monotonic()
    try:
        end = log_end(settings.amqp_url, settings.exchange)
        if end is None:
            raise RebuildError(f"the log {topology.log_name(settings.exchange)} is empty: nothing to rebuild from")
        previous = projection.read_current(etcd, settings.etcd_prefix, service)
        version = max([0, *projection.versions(etcd, settings.etcd_prefix, service)]) + 1
        first = log_start(settings.amqp_url, settings.exchange)
        snap = _latest_snapshot(etcd, settings.etcd_prefix, service)
        if first and (snap is None or snap + 1 < first):   # offset 0 is the log's first ever
            raise RebuildError(
                f"the log {topology.log_name(settings.exchange)} keeps offsets {first}..{end} only (retention dropped "
                f"the events before), and {service} has " + ("no snapshot" if snap is None else f"a snapshot at offset {snap} only")
                + f": a rebuild would miss events; take a snapshot (replay.snapshot({service!r})) before retention drops them")
        if snap is not None and (first or from_snapshot):
            _start_from_snapshot(etcd, settings.etcd_prefix, service, snap, version)
            progress(f"version {version} starts from the snapshot at offset {snap}")
        env = {"SOURCE": "log", "LOG_OFFSET": "first", "VIEW_VERSION": str(version), "SERVICE_NAME": service}
        progress(f"rebuilding {service} into version {version} (in use: {previous}), log up to offset {end}")

        def position() -> int | None:
            return projection.read_tracking(etcd, settings.etcd_prefix, service, version)

        killed = 0
        deadline = time.monotonic() + timeout
        while True:
            services.start(name, dedup=True, wait=False, env=env, progress=quiet)
            if killed < kills:
                pause, before = time.monotonic() + random.uniform(0.1, kill_every), position()
                # mid_work: not before the reader has committed a window since it started (or is done)
                moved = lambda at, since=before: at != since or at == end  # noqa: E731
                if mid_work and not until_or_stalled(position, moved, deadline, STALL):
                    services.kill(name, progress=quiet)   # stuck, no commit: started again, not counted
                    continue
                with contextlib.suppress(WaitTimeout):   # the pause ends the wait: a kill then
                    poll(position, lambda at: at == end, what="the kill's moment", progress=quiet,
                         timeout=max(pause - time.monotonic(), 0), interval=0.05)
                if position() != end:
                    services.kill(name, progress=quiet)   # SIGKILL: no goodbye, wherever it is
                    killed += 1
                    continue
            if not until_or_stalled(position, lambda at: at == end, deadline, STALL):
                progress(f"{name}: no commit for {STALL:g} s: started again")
                services.kill(name, progress=quiet)
                continue
            break
        services.stop(name, progress=quiet)
        if position() != end:
            raise RebuildError(f"version {version} of {service} reached offset {position()} of {end} within "
                               f"{timeout:g} s: see `services.logs({name!r})`")
        _switch(etcd, settings.etcd_prefix, service, previous, version)
        view = projection.read_view(etcd, settings.etcd_prefix, service, version)
        result = Rebuild(service, version, previous, projection.digest(view), end, killed,
                         projection.applied_twice(etcd, settings.etcd_prefix, service, version),
                         time.monotonic() - started)
        progress(f"{service}: version {version} in use, digest {result.digest[:16]}, {killed} kills, "
                 f"{result.applied_twice} events applied twice, {result.seconds:.1f} s")
        return result
    except SvcError as error:
        raise RebuildError(str(error)) from None
    finally:
        etcd.close()


def _switch(etcd, prefix: str, service: str, previous: int | None, version: int) -> None:
    """Put ``version`` in use in one transaction, if ``previous`` still is."""
    key = projection.current_key(prefix, service).encode()
    request = _etcd.new_txn()
    if previous is None:
        _etcd.add_absent(request.compare, key)
    else:
        _etcd.add_value_is(request.compare, key, str(previous).encode())
    _etcd.add_put(request.success, key, str(version).encode())
    if not etcd.txn(request).succeeded:
        raise RebuildError(f"{service}'s version in use changed during the rebuild (another rebuild?): "
                           f"version {version} is built but not switched to")



# Chapter 10's helpers: short calls for the notebook's cells, every wait with a deadline.

def wait_caught_up(service: str, version: int | None = None, *, timeout: float = 30.0,
                   progress: Progress = print) -> int:
    """Wait until ``service``'s tracking record (``version``, else the one in use, else 1) reaches
    the log's last offset; that offset. WaitTimeout (one line, the offset reached) after ``timeout``
    seconds; RebuildError if the log is empty."""
    settings, etcd = current(), _client()
    try:
        end = log_end(settings.amqp_url, settings.exchange)
        if end is None:
            raise RebuildError(f"the log {topology.log_name(settings.exchange)} is empty: nothing to catch up with")

        def position() -> int | None:
            chosen = version or projection.read_current(etcd, settings.etcd_prefix, service) or 1
            return projection.read_tracking(etcd, settings.etcd_prefix, service, chosen)

        poll(position, lambda at: at == end, what=f"{service}'s tracking record at offset {end}", timeout=timeout,
             progress=progress, describe=lambda at: f"offset {at}")
        return end
    finally:
        etcd.close()


def view(service: str, version: int | None = None) -> dict[str, dict]:
    """The read model of ``service`` (``version``, else the one in use) as stored in etcd:
    ``{"sku/<sku>": {"orders": n, "qty": n}, "customer/<customer>": {"orders": n}}``."""
    settings, etcd = current(), _client()
    try:
        version = version or projection.read_current(etcd, settings.etcd_prefix, service)
        return {} if version is None else projection.read_view(etcd, settings.etcd_prefix, service, version)
    finally:
        etcd.close()


view_of = projection.view_of       # the view (and its digest) a reader must build from the bodies
digest_of = projection.digest_of   # published, computed here in the kernel (svc.projection)
upcast = projection.upcast   # the rule by which old event shapes are read as today's (svc.projection)


def table(rebuilds: list[Rebuild], expected: str) -> str:
    """The rebuilds as the checker's table: one row each, its version, the SIGKILLs it survived,
    the events applied twice, and whether its digest equals ``expected`` (the log's view's)."""
    rows = [f"{'version':>7}  {'SIGKILLs':>8}  {'log up to':>9}  {'applied twice':>13}  digest            "
            "equal to the log's"]
    for one in rebuilds:
        rows.append(f"{one.version:>7}  {one.kills:>8}  {one.end:>9}  {one.applied_twice:>13}  {one.digest[:16]}  "
                    f"{'yes' if one.digest == expected else 'NO'}")
    return "\n".join(rows)


def wait_dropped(*, timeout: float = 20.0, progress: Progress = print) -> int:
    """Wait until retention has dropped the log's first segment (the broker does it in the
    background when a new segment opens), then a second and a half for the rest of the drop; the
    first offset the log keeps. WaitTimeout after ``timeout`` seconds."""
    settings = current()
    poll(lambda: log_start(settings.amqp_url, settings.exchange), lambda first: bool(first),
         what=f"retention to drop the first segment of {topology.log_name(settings.exchange)}", timeout=timeout,
         progress=progress, describe=lambda first: f"first offset {first}")
    time.sleep(1.5)
    return log_start(settings.amqp_url, settings.exchange)


def applied_twice(service: str, version: int | None = None) -> int:
    """How many events ``service``'s read model (``version``, else the one in use) applied more
    than once (svc.projection.applied_twice); 0 when it has none yet."""
    settings, etcd = current(), _client()
    try:
        version = version or projection.read_current(etcd, settings.etcd_prefix, service)
        return 0 if version is None else projection.applied_twice(etcd, settings.etcd_prefix, service, version)
    finally:
        etcd.close()
