"""DEDUP_MODE=talk: the talk's original design, reproduced faithfully, windows included.

A process-local set of seen ids, checked before the work, added after it, flushed to etcd once a
second, imported at start, no claims. These tests pin each of those properties against the real
etcd and real ``python -m svc`` processes, and show the two windows the claims close.
"""

import os
import subprocess
import sys

from svc import keys
from svc.config import Config
from svc.dedup import Verdict
from svc.dedup_talk import TalkDedup, talk_prefix
from svc.event import parse
from nirvana.testing import wait_for


def event(event_id: str):
    return parse(f'{{"type": "new_order", "id": "{event_id}"}}'.encode())


# ---------------------------------------------------------------- the setting


def test_claims_stay_the_default_and_talk_is_chosen_by_name():
    assert Config.from_env({"SERVICE_NAME": "orders"}).dedup_mode == "claims"
    assert Config.from_env({"SERVICE_NAME": "orders", "DEDUP_MODE": " Talk "}).dedup_mode == "talk"


def test_a_bad_dedup_mode_exits_2_with_one_line():
    env = {key: value for key, value in os.environ.items() if key != "DEDUP_MODE"}
    env.update(SERVICE_NAME="orders", ENABLE_ETCD="true", DEDUP_MODE="memory")
    done = subprocess.run([sys.executable, "-m", "svc"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == "svc: DEDUP_MODE='memory' is invalid: use one of claims, talk\n"


# ---------------------------------------------------------------- the strategy on the real etcd


def test_checked_before_added_after_flushed_each_second_and_imported(svc_world):
    service = "orders"
    dedup = TalkDedup(svc_world.etcd, svc_world.prefix, service, flush_interval=0.3)
    dedup.open()
    try:
        # Checked before the work: an unseen id is processed; the set is not touched yet.
        assert dedup.claim([event("a")]).result() == [Verdict.CLAIMED]
        assert dedup.claim([event("a")]).result() == [Verdict.CLAIMED]   # no claim: a sibling would pass too
        # Added after the work (once its effect is written).
        assert dedup.commit([event("a")]).result() == [Verdict.OK]
        assert dedup.claim([event("a"), event("b")]).result() == [Verdict.SKIPPED, Verdict.CLAIMED]
        # Not in etcd until the flusher runs; then it is.
        key = (talk_prefix(svc_world.prefix, service) + keys.encode_id("a")).encode()
        assert svc_world.etcd.get(key) is None
        wait_for(lambda: svc_world.etcd.get(key) == b"seen", "the flush of id a", timeout=3)
    finally:
        dedup.close()
    # A new process imports what was flushed.
    fresh = TalkDedup(svc_world.etcd, svc_world.prefix, service)
    fresh.open()
    try:
        assert fresh.seen == {"a"}
        assert fresh.claim([event("a")]).result() == [Verdict.SKIPPED]
    finally:
        fresh.close()


def test_a_graceful_close_flushes_what_is_left(svc_world):
    dedup = TalkDedup(svc_world.etcd, svc_world.prefix, "orders", flush_interval=3600)
    dedup.open()
    dedup.commit([event("late")]).result()
    dedup.close()
    assert svc_world.etcd.count_prefix(talk_prefix(svc_world.prefix, "orders")) == 1


# ---------------------------------------------------------------- the two windows, with real processes


def test_two_replicas_given_the_same_copies_both_process_them(svc_world):
    orders = svc_world.service_name("orders")
    svc_world.start(orders, replicas=2, enable_etcd=True, dedup_mode="talk", work_ms=300)
    with svc_world.publisher(orders) as publisher:
        for i in range(10):
            assert publisher.publish({"type": "new_order", "id": f"r{i}"}, count=2).ok
    wait_for(lambda: len(svc_world.effects_by_id(orders)) == 10 and svc_world.depth(orders) == 0,
             "every id processed", timeout=20)
    svc_world.publish(orders, {"type": "new_order", "id": "marker"}, count=2)
    wait_for(lambda: svc_world.effects(orders, "marker") >= 1, "a later event processed", timeout=20)
    twice = [i for i, n in svc_world.effects_by_id(orders).items() if n > 1]
    # Copies handed to both replicas at once are both processed: each checked its own set.
    assert len(twice) >= 5, svc_world.effects_by_id(orders)


def test_a_sigkill_before_the_flush_forgets_the_id_and_the_redelivery_is_processed_again(svc_world):
    orders = svc_world.service_name("orders")
    [crashing] = svc_world.start(orders, enable_etcd=True, dedup_mode="talk", crash_at="done")
    svc_world.publish(orders, {"type": "new_order", "id": "k1"})
    assert crashing.popen.wait(10) == -9   # killed after the effect, before the ack and the flush
    assert svc_world.effects(orders, "k1") == 1
    svc_world.start(orders, enable_etcd=True, dedup_mode="talk")
    wait_for(lambda: svc_world.effects(orders, "k1") == 2, "the redelivery processed a second time")
    # The same crash with claims: the done mark went with the effect, the redelivery is skipped.
    claims = svc_world.service_name("orders")
    [crashing] = svc_world.start(claims, enable_etcd=True, crash_at="done")
    svc_world.publish(claims, {"type": "new_order", "id": "k1"})
    assert crashing.popen.wait(10) == -9
    svc_world.start(claims, enable_etcd=True)
    svc_world.publish(claims, {"type": "new_order", "id": "marker"})
    wait_for(lambda: svc_world.effects(claims, "marker") == 1 and svc_world.depth(claims) == 0,
             "a later event processed")
    assert svc_world.effects(claims, "k1") == 1
