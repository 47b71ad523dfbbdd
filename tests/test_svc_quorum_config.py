"""Quorum queues and several broker nodes, the pure logic (issue 12): QUEUE_TYPE, DELIVERY_LIMIT and
several AMQP URLs read and checked; the queue arguments every declarer uses; the returns an event
carries over its copies requeued at the tail (svc/requeue.py)."""

import subprocess
import sys

import pika
import pytest

from nirvana.settings import Settings
from svc import requeue, topology
from svc.config import Config, mask_url, split_urls
from svc.errors import ConfigError

A, B = "amqp://u:s3cret@10.0.0.1:5672/%2F", "amqp://u:other@10.0.0.2:5673/%2F"


def test_classic_queues_and_a_delivery_limit_of_5_by_default():
    config = Config.from_env({"SERVICE_NAME": "orders"})
    assert (config.queue_type, config.delivery_limit) == ("classic", 5)
    config = Config.from_env({"SERVICE_NAME": "orders", "QUEUE_TYPE": "Quorum", "DELIVERY_LIMIT": "3"})
    assert (config.queue_type, config.delivery_limit) == ("quorum", 3)


@pytest.mark.parametrize("variable, value", [("QUEUE_TYPE", "stream"), ("QUEUE_TYPE", "quorum,classic"),
                                             ("DELIVERY_LIMIT", "0"), ("DELIVERY_LIMIT", "five"),
                                             ("DELIVERY_LIMIT", "1001"), ("AMQP_URL", f"{A},http://h"),
                                             ("AMQP_URL", f"{A},127.0.0.1:5673")])
def test_a_bad_queue_setting_exits_2_with_one_line_naming_it(variable, value):
    # Given a bad value, when svc starts, I expect exit status 2 and one line naming the variable.
    env = {"SERVICE_NAME": "orders", variable: value, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "svc"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"svc: {variable}=") and "s3cret" not in line


def test_several_amqp_urls_are_the_nodes_in_order_and_every_password_is_masked():
    config = Config.from_env({"SERVICE_NAME": "orders", "AMQP_URL": f"{A}, {B}"})
    assert config.amqp_urls == (A, B)
    assert split_urls("amqp://u:pa,ss@h/%2F") == ("amqp://u:pa,ss@h/%2F",)  # a comma inside one URL
    masked = mask_url(f"{A},{B}")
    assert masked == "amqp://u:***@10.0.0.1:5672/%2F,amqp://u:***@10.0.0.2:5673/%2F"
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"SERVICE_NAME": "orders", "AMQP_URL": f"{A},amqp://u:s3cret@h:0/"})
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)


def test_the_queue_arguments_of_each_type():
    assert topology.queue_arguments("ev") == {"x-dead-letter-exchange": "ev.dlx"}
    assert topology.queue_arguments("ev", "quorum", 7) == {
        "x-dead-letter-exchange": "ev.dlx", "x-queue-type": "quorum", "x-delivery-limit": 7,
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    assert topology.dead_letter_queue_arguments("quorum") == {"x-queue-type": "quorum"}  # no delivery limit
    assert topology.dead_letter_queue_arguments("classic") is None
    with pytest.raises(ValueError):
        topology.queue_arguments("ev", "stream")


def test_the_kit_reads_and_hands_on_the_queue_settings():
    settings = Settings.from_env({"QUEUE_TYPE": "quorum", "DELIVERY_LIMIT": "4", "AMQP_URL": f"{A},{B}"})
    assert (settings.queue_type, settings.delivery_limit, settings.amqp_url) == ("quorum", 4, f"{A},{B}")
    env = settings.service_environment()
    assert (env["QUEUE_TYPE"], env["DELIVERY_LIMIT"], env["AMQP_URL"]) == ("quorum", "4", f"{A},{B}")


def _properties(**headers):
    return pika.BasicProperties(headers=headers or None, content_type="application/json", message_id="m1")


def test_returns_add_up_over_an_events_copies():
    # Given a copy returned twice before (header) and once now (the broker's count)...
    delivered = _properties(**{requeue.RETURNED_HEADER: 2, requeue.DELIVERY_COUNT_HEADER: 1, "x-own": "kept"})
    assert requeue.returned(delivered) == 3
    # ... its next copy carries 3 and no broker count, the rest of its properties as they were.
    copied = requeue.copy_properties(delivered)
    assert copied.headers == {requeue.RETURNED_HEADER: 3, "x-own": "kept"}
    assert (copied.content_type, copied.message_id, copied.delivery_mode) == ("application/json", "m1", 2)
    assert delivered.headers[requeue.DELIVERY_COUNT_HEADER] == 1   # the delivery itself is untouched
    # Over the limit only past it, as the broker counts one copy.
    assert requeue.over_limit(delivered, 3) == ""
    assert "returned to its queue 3 times" in requeue.over_limit(delivered, 2)
    assert requeue.returned(_properties()) == 0 and requeue.copy_properties(_properties()).headers == {}


def test_after_a_node_is_lost_the_nodes_after_it_are_tried_first():
    from svc.amqp import lost

    urls = ("amqp://a", "amqp://b", "amqp://c")
    assert lost(urls, "amqp://a") == ("amqp://b", "amqp://c", "amqp://a")
    assert lost(urls, "amqp://b") == ("amqp://c", "amqp://a", "amqp://b")
    assert lost(urls, "amqp://c") == urls and lost(urls, None) == urls   # never connected: the same order
