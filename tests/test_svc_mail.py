"""An effect outside etcd (a mail handed to the kit's outbox): the honest limit of the done mark,
and the cure (the event id as an idempotency key), with real svc processes and a real HTTP outbox."""

import json
import urllib.request

import pytest

from nirvana.outbox import Outbox
from nirvana.own_etcd import free_port
from svc.config import Config
from svc.errors import ConfigError
from nirvana.testing import wait_for


@pytest.fixture
def outbox():
    box = Outbox().start()
    yield box
    box.stop()


def post(url: str, message: dict, key: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    request = urllib.request.Request(f"{url}/messages", json.dumps(message).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)


def test_the_outbox_sends_a_repeated_key_once_and_records_every_hand_over(outbox):
    assert post(outbox.url, {"event": "a"}, key="notify:a")["repeated"] is False
    assert post(outbox.url, {"event": "a"}, key="notify:a")["repeated"] is True
    post(outbox.url, {"event": "b"})
    post(outbox.url, {"event": "b"})
    assert (outbox.handed("a"), outbox.sent("a")) == (2, 1)
    assert (outbox.handed("b"), outbox.sent("b")) == (2, 2)


def test_settings():
    config = Config.from_env({"SERVICE_NAME": "notify", "OUTBOX_URL": "http://127.0.0.1:8025",
                              "OUTBOX_IDEMPOTENCY": "true", "CRASH_AT": "sent"})
    assert (config.outbox_url, config.outbox_idempotency, config.crash_at) == ("http://127.0.0.1:8025", True, "sent")
    with pytest.raises(ConfigError, match="^OUTBOX_URL="):
        Config.from_env({"SERVICE_NAME": "notify", "OUTBOX_URL": "smtp://mail"})


@pytest.mark.parametrize("idempotency, sent", [(False, 2), (True, 1)])
def test_killed_after_the_mail_before_the_done_mark(svc_world, outbox, idempotency, sent):
    notify = svc_world.service_name("notify")
    settings = dict(enable_etcd=True, claim_ttl=1, outbox_url=outbox.url, outbox_idempotency=str(idempotency).lower())
    [crashing] = svc_world.start(notify, crash_at="sent", **settings)
    svc_world.publish(notify, {"type": "new_order", "id": "m1"})
    # Given notify killed after the outbox took the mail, before the done mark...
    assert crashing.popen.wait(10) == -9
    assert outbox.handed("m1") == 1 and svc_world.effects(notify, "m1") == 0
    # ... when the redelivery is processed after the dead claim's lease...
    svc_world.start(notify, **settings)
    wait_for(lambda: svc_world.effects(notify, "m1") == 1, "the redelivery processed")
    # ... the mail was handed over twice: sent twice, or once with the event id as its key.
    assert outbox.handed("m1") == 2
    assert outbox.sent("m1") == sent


def test_an_outbox_that_does_not_answer_requeues_and_nothing_is_lost(svc_world):
    notify = svc_world.service_name("notify")
    port = free_port()
    [process] = svc_world.start(notify, enable_etcd=True, outbox_url=f"http://127.0.0.1:{port}",
                                outbox_idempotency="true")
    svc_world.publish(notify, {"type": "new_order", "id": "m2"})
    wait_for(lambda: "did not take the mail" in process.log(), "the failed hand-over logged")
    assert svc_world.effects(notify, "m2") == 0
    box = Outbox(port).start()
    try:
        wait_for(lambda: svc_world.effects(notify, "m2") == 1, "m2 processed once the outbox answers", timeout=20)
        assert box.sent("m2") == 1
    finally:
        box.stop()
