"""``python -m svc``: read the config, wire the parts, consume until SIGTERM or SIGINT."""

import logging
import signal
import socket
import sys
import threading

from ._etcd import Etcd
from .config import Config, mask_url
from .consumer import Supervisor, open_dedup
from .dedup import EtcdDedup, NoDedup
from .errors import ConfigError
from .metrics import Metrics
from .processor import Processor

log = logging.getLogger("svc")


def main(environ=None) -> int:
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
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Finish the current window, settle it, close: the handler only asks the loop to stop.
        signal.signal(signum, lambda number, frame: stop.set())
    etcd = Etcd(config.etcd_endpoints, timeout=config.etcd_timeout)
    if config.enable_etcd:
        dedup = EtcdDedup(etcd, config.etcd_prefix, config.service,
                          claim_ttl=config.claim_ttl, retention=config.dedup_retention)
    else:
        dedup = NoDedup(etcd, config.etcd_prefix, config.service)
    log.info("starting %s: amqp %s, exchange %s, etcd %s%s, dedup %s, statsd %s:%d", config.service,
             mask_url(config.amqp_url), config.exchange, ",".join(f"{h}:{p}" for h, p in config.etcd_endpoints),
             config.etcd_prefix, "on" if config.enable_etcd else "off", config.statsd_host, config.statsd_port)
    try:
        if open_dedup(dedup, stop):
            processor = Processor(config.service, dedup, meter, work_ms=config.work_ms, crash_at=config.crash_at)
            Supervisor(config, processor, stop).run()
    finally:
        dedup.close()
        etcd.close()
    log.info("%s stopped", config.service)
    return 0


def _metrics(config: Config) -> Metrics:
    try:
        return Metrics(config.service, config.statsd_host, config.statsd_port)
    except (socket.gaierror, OSError) as error:
        raise ConfigError(f"STATSD_HOST={config.statsd_host!r} is invalid: {error}") from None
