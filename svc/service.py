"""``python -m svc``: read the config, wire the parts, consume until SIGTERM or SIGINT."""

import logging
import os
import signal
import socket
import sys
import threading

from . import install_patches
from .config import Config, mask_url
from .dedup import EtcdDedup
from .nodedup import NoDedup
from .dedup_talk import TalkDedup
from .etcd import Etcd
from .errors import BrokerRefused, ConfigError, EtcdRefused
from .faults import Faults
from .hooks import Hook
from .mail import Mailer
from .metrics import Metrics, MetricsHook
from .processor import Processor
from .replay import LogReader
from .protocols import Dedup, Meter
from .supervisor import Supervisor, open_dedup

log = logging.getLogger("svc")

STOP_DEADLINE = 8.0  # seconds from SIGTERM/SIGINT to exit, whatever holds the loop (a connection the
                     # broker blocks, work longer than that): a supervisor's stop (Docker, systemd)
                     # waits 10 s before SIGKILL, and unacked deliveries return to the queue either way


def main(environ=None) -> int:
    """``python -m svc``: run the service the environment describes (svc.config) until SIGTERM or
    SIGINT; the exit status (0, 2 for a bad setting or a refusal no retry cures)."""
    install_patches()
    try:
        config = Config.from_env(environ)
        meter = _metrics(config)
    except ConfigError as error:
        print(f"svc: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pika logs every connection step, and each failed attempt as ERROR with a traceback; ours is
    # one line per start, stop and reconnect (and per event step at DEBUG), so pika speaks only
    # when asked on its own (PIKA_LOG_LEVEL=DEBUG), never because LOG_LEVEL=DEBUG follows an event.
    logging.getLogger("pika").setLevel(config.pika_log_level)
    stop = threading.Event()

    def on_signal(number, frame) -> None:
        # Finish the current window, settle it, close: the handler asks the loop to stop, and
        # starts the deadline that ends the process if the loop cannot (see STOP_DEADLINE).
        if not stop.is_set():
            stop.set()
            timer = threading.Timer(STOP_DEADLINE, _exit_now, (config.service,))
            timer.daemon = True
            timer.start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    # gRPC's core logs each failed TLS handshake on stderr at INFO; svc says it once, in its own line
    # (read by gRPC when it starts its first channel, below).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    etcd = Etcd(config.etcd_endpoints, timeout=config.etcd_timeout, access=config.etcd_access)
    if config.source == "log":
        return _read_log(config, etcd, meter, stop)
    dedup: Dedup
    if config.enable_etcd and config.dedup_mode == "talk":
        dedup = TalkDedup(etcd, config.etcd_prefix, config.service)
    elif config.enable_etcd:
        dedup = EtcdDedup(etcd, config.etcd_prefix, config.service,
                          claim_ttl=config.claim_ttl, retention=config.dedup_retention)
    else:
        dedup = NoDedup(etcd, config.etcd_prefix, config.service)
    log.info("starting %s: amqp %s, exchange %s, etcd %s, dedup %s, statsd %s:%d", config.service,
             mask_url(config.amqp_url), config.exchange, _etcd_address(config),
             f"on ({config.dedup_mode})" if config.enable_etcd else "off", config.statsd_host, config.statsd_port)
    status = 0
    try:
        if open_dedup(dedup, stop):
            mailer = Mailer(config.outbox_url, config.service, idempotency=config.outbox_idempotency) \
                if config.outbox_url else None
            processor = Processor(config.service, dedup, meter, hooks=hooks(config, meter), mailer=mailer)
            Supervisor(config, processor, stop).run()
    except (BrokerRefused, EtcdRefused) as error:
        # No retry can cure it (the broker or etcd refuses our configuration): one line, exit status 2.
        log.error("%s", error)
        status = 2
    finally:
        dedup.close()
        etcd.close()
    log.info("%s stopped", config.service)
    return status


def _read_log(config: Config, etcd: Etcd, meter: Meter, stop: threading.Event) -> int:
    """SOURCE=log: read the events back from the log with a tracking record (svc/replay.py)."""
    log.info("starting %s: amqp %s, log of exchange %s, etcd %s%s, dedup by id %s, statsd %s:%d", config.service,
             mask_url(config.amqp_url), config.exchange, ",".join(f"{h}:{p}" for h, p in config.etcd_endpoints),
             config.etcd_prefix, "on" if config.enable_etcd else "off", config.statsd_host, config.statsd_port)
    status = 0
    try:
        LogReader(config, etcd, meter, stop).run()
    except BrokerRefused as error:
        log.error("%s", error)
        status = 2
    finally:
        etcd.close()
    log.info("%s stopped", config.service)
    return status


def hooks(config: Config, meter: Meter) -> list[Hook]:
    """The processor's hooks: metrics always; fault injection (svc.faults) only when CRASH_AT or
    WORK_MS is set, so the production path carries none of it."""
    installed: list[Hook] = [MetricsHook(config.service, meter)]
    if config.crash_at or config.work_ms:
        installed.append(Faults(work_ms=config.work_ms, crash_at=config.crash_at, before_kill=meter.flush))
    return installed


def _etcd_address(config: Config) -> str:
    """The etcd endpoints and prefix for the start line, with TLS and the user (never the password)."""
    access = config.etcd_access
    return (("https://" if access.tls else "") + ",".join(f"{h}:{p}" for h, p in config.etcd_endpoints)
            + config.etcd_prefix + (f" as user {access.user}" if access.user else ""))


def _exit_now(service: str) -> None:
    """The stop deadline passed: exit at once. What this process held unacked returns to the queue
    when its connection drops; with dedup, a claim not marked done expires with its lease."""
    log.error("%s did not stop within %.0f s of the signal (blocked by RabbitMQ, or still working); "
              "exiting now, unacked events return to the queue", service, STOP_DEADLINE)
    logging.shutdown()
    os._exit(1)


def _metrics(config: Config) -> Metrics:
    try:
        return Metrics(config.service, config.statsd_host, config.statsd_port)
    except (socket.gaierror, OSError) as error:
        raise ConfigError(f"STATSD_HOST={config.statsd_host!r} is invalid: {error}") from None
