"""bench/bench_svc.py: which groups ``--only`` runs, and the dead-sibling runs as long as their yardstick."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_svc  # noqa: E402
from svc import effects  # noqa: E402


def test_only_runs_the_groups_it_names_by_a_yardstick_or_a_contender():
    # A contender names its group, and so does a yardstick; nothing named: every group.
    assert bench_svc.chosen(["sibling", "healthy quorum"]) == (("healthy", ("sibling",)),
                                                               ("healthy quorum", ("sibling quorum",)))
    assert bench_svc.chosen(["dedup"]) == (("bare", ("plain", "dedup")),)
    assert bench_svc.chosen(None) == bench_svc.GROUPS


def test_the_dead_siblings_yardstick_runs_with_the_same_claim_ttl():
    assert bench_svc.sibling_settings(prefetch=3) == {"prefetch": 3, "claim_ttl": bench_svc.SIBLING_CLAIM_TTL}


def test_the_survivor_processes_as_many_unclaimed_events_as_its_yardstick(svc_world, monkeypatch):
    # Given a queue of 300 events and a sibling that claims a window of them and dies...
    orders = svc_world.service_name("orders")
    monkeypatch.setattr(bench_svc, "SIBLING_CLAIM_TTL", 30, raising=False)   # outlives the test, not much more
    rate = bench_svc.sibling_rate(svc_world, orders, 300, 30)
    # ... I expect the survivor's rate counted over 300 events it processed, as its healthy yardstick
    # drains 300 (before: 300 less the sibling's window, up to a tenth fewer with PREFETCH=30).
    assert rate > 0
    assert len(effects.records(svc_world.etcd, orders, prefix=svc_world.prefix)) == 300
