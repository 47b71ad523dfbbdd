"""The kit's side of reading events back: the log in status and reset, a rebuild switched to in one
step, and a rebuild under SIGKILLs ending with the digest of an undisturbed one (real broker, etcd)."""

import json

from nirvana import replay
from nirvana.publisher import Publisher, publish_bodies
from svc import projection
from svc.event import parse


def publish(count: int) -> list[bytes]:
    bodies = [json.dumps({"type": "new_order", "id": f"r-{i}",
                          "args": {"sku": f"sku-{i % 9}", "customer": f"c-{i % 13}", "qty": 1 + i % 4}}).encode()
              for i in range(count)]
    bodies.insert(7, bodies[3])   # a copy, as a publisher's retry leaves one
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
    assert deleted == 6
    line = replay.log_status()
    assert line.startswith(f"log           {kit_env['exchange']}.log: 0 events, retention max-age 1h, max-bytes none")


def test_a_rebuild_under_sigkills_ends_with_the_digest_of_an_undisturbed_one(kit_env):
    # Given a log of events (a copy among them)
    bodies = publish(3000)
    expected = projection.digest(projection.build(parse(body) for body in bodies))
    # When the read model is built once undisturbed, then rebuilt with its reader SIGKILLed 5 times
    first = replay.rebuild("billing")
    second = replay.rebuild("billing", kills=5, kill_every=0.4)
    # I expect both equal to the view of the log, nothing applied twice, the second one in use
    assert (first.version, first.previous, second.version, second.previous) == (1, None, 2, 1)
    assert first.digest == second.digest == expected
    assert second.kills == 5 and first.applied_twice == second.applied_twice == 0
    assert replay.version_in_use("billing") == 2 and replay.digest("billing") == expected
