"""The kit's side of reading events back: the log in status and reset, a rebuild switched to in one
step, and a rebuild under SIGKILLs ending with the digest of an undisturbed one (real broker, etcd)."""

import json
import time

import pytest

from nirvana import replay, stack
from nirvana.publisher import Publisher, publish_bodies
from svc import projection
from svc.stream import log_start
from nirvana.testing import wait_for
from svc.event import parse


def publish(count: int, start: int = 0) -> list[bytes]:
    bodies = [json.dumps({"type": "new_order", "id": f"r-{i}",
                          "args": {"sku": f"sku-{i % 9}", "customer": f"c-{i % 13}", "qty": 1 + i % 4}}).encode()
              for i in range(start, start + count)]
    bodies.insert(min(7, count), bodies[min(3, count - 1)])   # a copy, as a publisher's retry leaves one
    with Publisher():
        pass   # the topology declared, the log with it
    publish_bodies(bodies)
    return bodies


def test_reset_empties_the_log_and_declares_it_with_the_kits_retention(kit_env, monkeypatch):
    # Given events in the log, and a retention set for the kit
    publish(5)
    monkeypatch.setenv("LOG_MAX_AGE", "1h")
    monkeypatch.setenv("LOG_MAX_BYTES", "0")
    # When the log is emptied (as `./kit reset` does)
    deleted = replay.reset_log()
    # I expect its events gone and the log declared again with that retention
    assert deleted == (0, 5)
    line = replay.log_status(stack.rabbitmq_node().ctl())
    assert line.startswith(f"log           {kit_env['exchange']}.log: empty, retention max-age 1h, max-bytes none")


def test_a_rebuild_under_sigkills_ends_with_the_digest_of_an_undisturbed_one(kit_env):
    # Given a log of events (a copy among them)
    bodies = publish(5000)
    expected = projection.digest(projection.build(parse(body) for body in bodies))
    # When the read model is built once undisturbed, then rebuilt with its reader SIGKILLed 5 times
    first = replay.rebuild("billing")
    # (mid_work: each kill lands after the reader committed a window since its start; it may reach
    # the log's end before the fifth, so at least one kill, at most five)
    second = replay.rebuild("billing", kills=5, kill_every=0.25, mid_work=True)
    # I expect both equal to the view of the log, nothing applied twice, the second one in use
    assert (first.version, first.previous, second.version, second.previous) == (1, None, 2, 1)
    assert first.digest == second.digest == expected
    assert 1 <= second.kills <= 5 and first.applied_twice == second.applied_twice == 0
    assert replay.version_in_use("billing") == 2 and replay.digest("billing") == expected


def test_once_retention_dropped_events_a_rebuild_starts_from_a_snapshot_or_refuses(kit_env, monkeypatch):
    # Given a log whose retention drops whole segments of 5,000 bytes beyond 80,000 bytes (about 340 events)
    for variable, value in {"LOG_MAX_AGE": "", "LOG_MAX_BYTES": "80000", "LOG_SEGMENT_BYTES": "5000"}.items():
        monkeypatch.setenv(variable, value)
    replay.reset_log()
    # and billing's read model built from its first events, a snapshot taken of it
    early = publish(250)
    replay.rebuild("billing", progress=lambda line: None)
    at = replay.snapshot("billing")
    # When more events push the first ones out of the log
    late = publish(200, start=250)
    # (the broker drops segments when it opens a new one, in the background: waited for)
    wait_for(lambda: log_start(kit_env["url"], kit_env["exchange"]), "retention to drop a segment", 10)
    time.sleep(1.5)
    first = log_start(kit_env["url"], kit_env["exchange"])
    assert 0 < first <= at + 1
    # I expect a rebuild from the snapshot plus the rest of the log equal to the view of every event ...
    rebuilt = replay.rebuild("billing", progress=lambda line: None)
    assert rebuilt.digest == projection.digest(projection.build(parse(body) for body in early + late))
    # ... and a read model with no snapshot refused in one line, rather than built wrong
    with pytest.raises(replay.RebuildError, match=rf"^the log {kit_env['exchange']}.log keeps offsets {first}\.\.\d+ only "
                                                    r"\(retention dropped the events before\), and audit has no snapshot: "
                                                    r"a rebuild would miss events; take a snapshot"):
        replay.rebuild("audit", progress=lambda line: None)


def test_a_snapshot_copies_done_records_near_a_mebibyte_each_in_transactions_etcd_takes(etcd):
    client, prefix = etcd
    # Given three done records of 600 KB each (a window of long ids and bodies): 1.8 MB in all, over
    # etcd's --max-request-bytes (1.5 MiB) in one transaction
    items = [(f"{prefix}/copy/windows/{i:020d}".encode(), b"x" * 600_000) for i in range(3)]
    # When they are copied as a snapshot copies
    replay._put_all(client, items)
    # I expect each copied whole (in transactions of about 1 MiB at most)
    assert [client.get(key) for key, _ in items] == [value for _, value in items]
