"""The kit's settings: the variables ``svc`` reads, read once, with svc's own defaults and checks.

The kit and the services it starts must agree on where events go and where their keys live: a
learner who exports ``ETCD_PREFIX=/x`` for svc gets the notebook's helpers, panels and ``reset``
on ``/x`` too. So the kit reads exactly svc's variables through :meth:`svc.Config.from_env` (the
same names, defaults and checks), once, into a frozen :class:`Settings`; every helper takes its
broker URL, exchange, etcd endpoints and prefix from :func:`current`, and every service the kit
starts is handed the same values (:meth:`Settings.service_environment`).

The talk's fixed names come from svc too: its services (:data:`svc.topology.DEFAULT_SERVICES`),
event types (:data:`svc.event.EVENT_TYPES`) and routing key (:data:`svc.publisher.DEFAULT_ROUTING_KEY`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from svc import topology
from svc.config import ETCD_ACCESS, SERVICE_NAME_RE, Config, EtcdAccess
from svc.errors import ConfigError
from svc.event import EVENT_TYPES
from svc.publisher import DEFAULT_ROUTING_KEY

from . import endpoints
from .errors import SettingError
from .shape import recorded

# svc's variables that say where things are; the kit shares them with every service it starts.
# (SERVICE_NAME and ENABLE_ETCD are chosen per service; the rest tune one service's behaviour.)
# etcd's user, password and TLS files (ETCD_ACCESS) too: the kit's own etcd clients log in with them.
SHARED = ("AMQP_URL", "ETCD_ENDPOINTS", "STATSD_HOST", "STATSD_PORT", "EVENTS_EXCHANGE", "ETCD_PREFIX",
          "QUEUE_TYPE", "DELIVERY_LIMIT", *ETCD_ACCESS)
NAME_PATTERN = SERVICE_NAME_RE


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Where the kit's events, keys and metrics are; built by :meth:`from_env`."""

    amqp_url: str
    etcd_endpoints: tuple[tuple[str, int], ...]
    statsd_host: str
    statsd_port: int
    exchange: str
    etcd_prefix: str                 # no trailing slash: keys live under ``etcd_prefix + "/"``
    queue_type: str = "classic"      # QUEUE_TYPE: the kit declares the queues as its services do
    delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT
    graphite_url: str = endpoints.GRAPHITE_URL
    services: tuple[str, ...] = topology.DEFAULT_SERVICES
    event_types: tuple[str, ...] = EVENT_TYPES
    routing_key: str = DEFAULT_ROUTING_KEY
    etcd_access: EtcdAccess = EtcdAccess()   # ETCD_USER ... ETCD_KEY (its repr shows no password)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read svc's shared variables (:data:`SHARED`) with svc's defaults and checks.

        Raises :class:`SettingError` (exit status 2) with svc's one line naming the bad variable.
        """
        env = os.environ if environ is None else environ
        shared = {name: env[name] for name in SHARED if name in env}
        if environ is None:   # the kit's cluster while `./kit up --cluster` holds: its nodes by default
            kit_cluster = recorded()
            shared = {**(kit_cluster.environment() if kit_cluster else {}), **shared}
        try:
            # SERVICE_NAME is required by svc but not shared: any valid name reads the rest
            config = Config.from_env({**shared, "SERVICE_NAME": topology.DEFAULT_SERVICES[0]})
        except ConfigError as error:
            raise SettingError(f"{error}: fix or unset it (the kit reads svc's variables)") from None
        return cls(amqp_url=config.amqp_url, etcd_endpoints=config.etcd_endpoints,
                   statsd_host=config.statsd_host, statsd_port=config.statsd_port,
                   exchange=config.exchange, etcd_prefix=config.etcd_prefix, queue_type=config.queue_type,
                   delivery_limit=config.delivery_limit, etcd_access=config.etcd_access)

    @property
    def etcd_endpoint(self) -> str:
        """The etcd endpoints as ETCD_ENDPOINTS spells them: ``host:port[,host:port...]``."""
        return ",".join(f"{host}:{port}" for host, port in self.etcd_endpoints)

    def service_environment(self) -> dict[str, str]:
        """svc's shared variables with these values, for a service the kit starts."""
        return {"AMQP_URL": self.amqp_url, "ETCD_ENDPOINTS": self.etcd_endpoint,
                "STATSD_HOST": self.statsd_host, "STATSD_PORT": str(self.statsd_port),
                "EVENTS_EXCHANGE": self.exchange, "ETCD_PREFIX": self.etcd_prefix,
                "QUEUE_TYPE": self.queue_type, "DELIVERY_LIMIT": str(self.delivery_limit),
                **self.etcd_access.environment()}


_current: Settings | None = None


def current() -> Settings:
    """The kit's settings, read from the environment at the first call and kept.

    Raises :class:`SettingError` when a variable is bad (and reads again at the next call).
    """
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def reload(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings again (after the environment changed in a running kernel); returns them.

    A bad variable raises :class:`SettingError` and keeps the settings read before.
    """
    settings = Settings.from_env(environ)
    use(settings)
    return settings


def use(chosen: Settings | None) -> Settings | None:
    """Make ``chosen`` the settings :func:`current` returns (None: read the environment again at
    the next call, as a kernel started now would); returns those in use before (None if none were
    read yet), to put them back. The one way to set them (:func:`reload` reads and uses them)."""
    global _current
    before, _current = _current, chosen
    return before


__all__ = ["Settings", "SettingError", "current", "reload", "use", "SHARED", "NAME_PATTERN"]
