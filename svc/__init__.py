"""svc: the service of the Reliability Nirvana talk, consumers and a publisher that can be trusted.

Run a consumer with ``SERVICE_NAME=orders python -m svc`` (``ENABLE_ETCD=true`` to deduplicate)
and publish with ``python -m svc.publish``. The edges to the libraries are :mod:`svc.amqp`
(RabbitMQ, pika) and :mod:`svc.etcd` (etcd, gRPC); importing svc changes no library: the entry
points call :func:`install_patches`.
"""

from . import amqp, etcd
from .etcd import Etcd
from .config import Config, EtcdAccess, mask_url
from .dedup import EtcdDedup
from .nodedup import NoDedup
from .effects import count as count_effects, counts_by_id
from .errors import (BrokerRefused, BrokerUnavailable, ChannelClosed, ConfigError, DedupUnavailable, EtcdRefused,
                     InvalidEvent, MessageRefused, PublishError, SvcError)
from .event import EVENT_TYPES, Event, parse
from .hooks import Hook
from .outcome import Outcome, Settlement
from .protocols import Dedup, Meter, Verdict
from .publisher import Publisher, PublishResult
from .topology import DEFAULT_EXCHANGE, DEFAULT_SERVICES, declare, queue_name

__all__ = [
    # configuration
    "Config", "EtcdAccess", "mask_url",
    # events
    "EVENT_TYPES", "Event", "parse",
    # topology
    "DEFAULT_EXCHANGE", "DEFAULT_SERVICES", "declare", "queue_name",
    # deduplication and effects
    "Dedup", "Etcd", "EtcdDedup", "NoDedup", "Verdict", "count_effects", "counts_by_id",
    # processing: what a delivery becomes, the hooks around its steps, the meter they count into
    "Outcome", "Settlement", "Hook", "Meter",
    # publishing
    "Publisher", "PublishResult",
    # errors
    "SvcError", "ConfigError", "InvalidEvent", "DedupUnavailable", "EtcdRefused", "BrokerUnavailable", "PublishError",
    "BrokerRefused", "ChannelClosed", "MessageRefused",
    # the edges, and their patches to pika and etcd3
    "amqp", "etcd", "install_patches",
]


def install_patches() -> None:
    """Install svc's patches to its libraries (idempotent; never done at import): pika's tolerant
    decoding of message properties and its protocol header answer (:func:`svc.amqp.install_patches`),
    etcd3's protobuf modules regenerated for protobuf 4+ (:func:`svc.etcd.install_patches`). Called
    by the entry points (``python -m svc``, ``python -m svc.publish``, ``python -m nirvana``,
    :func:`nirvana.reset`) and by the edges before their first connection."""
    amqp.install_patches()
    etcd.install_patches()
