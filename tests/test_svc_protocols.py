"""svc.protocols: every deduplication is a Dedup and every meter a Meter by shape, not by a base class.

Pure logic (nothing connects: the etcd client is built, never used), so no stack is needed.
"""

import inspect

import pytest

from svc import dedup, dedup_talk, nodedup, protocols
from svc.etcd import Etcd
from svc.metrics import Metrics
from nirvana.testing import MemoryDedup, MemoryMeter

ETCD = Etcd([("127.0.0.1", 1)], timeout=0.1)   # never asked: only the objects' shapes are read

DEDUPS = {
    "NoDedup": lambda: nodedup.NoDedup(ETCD, "/p", "orders"),
    "EtcdDedup": lambda: dedup.EtcdDedup(ETCD, "/p", "orders", claim_ttl=5, retention=60),
    "TalkDedup": lambda: dedup_talk.TalkDedup(ETCD, "/p", "orders"),
    "MemoryDedup": MemoryDedup,
}


def members(protocol) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(getattr(protocol, name)) for name, value in vars(protocol).items()
            if inspect.isfunction(value) and not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(DEDUPS))
def test_every_deduplication_is_a_dedup_with_the_protocols_signatures(name):
    made = DEDUPS[name]()
    assert isinstance(made, protocols.Dedup)
    assert isinstance(made.enabled, bool) and hasattr(made, "on_release")
    for method, signature in members(protocols.Dedup).items():
        assert inspect.signature(getattr(type(made), method)).parameters.keys() == signature.parameters.keys(), method


def test_no_deduplication_is_a_kind_of_nodedup():
    # The type is the protocol; NoDedup is one deduplication among others, not their base
    for name in ("EtcdDedup", "TalkDedup", "MemoryDedup"):
        assert not isinstance(DEDUPS[name](), nodedup.NoDedup), name


def test_the_processor_and_the_service_are_annotated_with_the_protocols():
    from svc import processor, supervisor
    assert inspect.signature(processor.Processor).parameters["dedup"].annotation is protocols.Dedup
    assert inspect.signature(processor.Processor).parameters["meter"].annotation is protocols.Meter
    assert inspect.signature(supervisor.open_dedup).parameters["dedup"].annotation is protocols.Dedup


@pytest.mark.parametrize("meter", [Metrics("orders", "127.0.0.1", 8125), MemoryMeter()], ids=type)
def test_every_meter_is_a_meter(meter):
    assert isinstance(meter, protocols.Meter)
    for method, signature in members(protocols.Meter).items():
        assert inspect.signature(getattr(type(meter), method)).parameters.keys() == signature.parameters.keys()
