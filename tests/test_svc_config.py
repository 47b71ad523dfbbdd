"""Configuration of ``python -m svc``: defaults, one-line errors naming the variable, exit status 2."""

import re
import subprocess
import sys

import pytest

from svc.config import Config, mask_url
from svc.errors import ConfigError


def test_defaults_are_the_talks():
    config = Config.from_env({"SERVICE_NAME": "orders"})
    assert config.service == "orders" and config.enable_etcd is False
    assert config.exchange == "events" and config.etcd_prefix == "/nirvana"
    assert config.etcd_endpoints == (("127.0.0.1", 2379),)


def test_a_cluster_of_endpoints():
    config = Config.from_env({"SERVICE_NAME": "notify", "ENABLE_ETCD": "true",
                              "ETCD_ENDPOINTS": "10.0.0.1:2379, http://10.0.0.2:2379,etcd3:12379"})
    assert config.enable_etcd
    assert config.etcd_endpoints == (("10.0.0.1", 2379), ("10.0.0.2", 2379), ("etcd3", 12379))


@pytest.mark.parametrize("variable, value", [
    ("SERVICE_NAME", ""), ("SERVICE_NAME", "Orders"), ("SERVICE_NAME", "a" * 33), ("SERVICE_NAME", "../x"),
    ("ENABLE_ETCD", "maybe"), ("ETCD_ENDPOINTS", "localhost"), ("ETCD_ENDPOINTS", "h:99999"),
    ("STATSD_PORT", "eighty"), ("PREFETCH", "0"), ("CLAIM_TTL", "0"), ("AMQP_URL", "http://x"),
    ("EVENTS_EXCHANGE", "a b"), ("ETCD_PREFIX", "nirvana"), ("LOG_LEVEL", "loud"), ("PIKA_LOG_LEVEL", "chatty"), ("CRASH_AT", "later"),
])
def test_a_bad_value_names_its_variable(variable, value):
    env = {"SERVICE_NAME": "orders", variable: value}
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env)
    assert str(raised.value).startswith(variable) and "\n" not in str(raised.value)


def test_the_password_never_shows():
    assert mask_url("amqp://user:s3cret@host:5672/%2F") == "amqp://user:***@host:5672/%2F"
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"SERVICE_NAME": "orders", "AMQP_URL": "ftp://user:s3cret@host"})
    assert "s3cret" not in str(raised.value)


BAD_AMQP_URLS = ["amqp://u:s3cret@h:abc/", "amqp://u:s3cret@h/?heartbeat=x", "amqp://u:s3cret@[::1/",
                  "amqp://u:s3cret@h:0/", "amqp://u:s3cret@h/?no_such_option=1", "amqp:///"]


@pytest.mark.parametrize("url", BAD_AMQP_URLS)
def test_a_broken_amqp_url_is_one_line_without_the_password(url):
    # Given an AMQP_URL that pika cannot use, I expect a ConfigError (not pika's ValueError later).
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"SERVICE_NAME": "orders", "AMQP_URL": url})
    message = str(raised.value)
    assert message.startswith("AMQP_URL") and "\n" not in message and "s3cret" not in message


@pytest.mark.parametrize("endpoints", ["unix://x:1", "http://a:2379,https://h:2379"])
def test_an_etcd_endpoint_with_another_scheme_is_refused(endpoints):
    # Given a scheme etcd's clients do not speak, or plain and TLS endpoints mixed in one cluster,
    # I expect a refusal, not retries forever.
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"SERVICE_NAME": "orders", "ETCD_ENDPOINTS": endpoints})
    assert str(raised.value).startswith("ETCD_ENDPOINTS") and "https://" in str(raised.value)


@pytest.mark.parametrize("endpoints", ["https://h:2379", "127.0.0.1:2379,https://h:2379"])
def test_https_etcd_endpoints_speak_tls(endpoints):
    # Given https:// (with no CA file: the system's roots), I expect TLS to every endpoint.
    config = Config.from_env({"SERVICE_NAME": "orders", "ETCD_ENDPOINTS": endpoints})
    assert config.etcd_access.tls and config.etcd_access.ca is None


@pytest.mark.parametrize("variable, value", [("AMQP_URL", "amqp://u:s3cret@h:abc/"),
                                             ("AMQP_URL", "amqp://u:s3cret@[::1/"),
                                             ("ETCD_ENDPOINTS", "http://a:2379,https://h:2379")])
def test_python_m_svc_exits_2_with_one_line_for_a_broken_url(variable, value):
    result = subprocess.run([sys.executable, "-m", "svc"], env={"SERVICE_NAME": "orders", variable: value},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and variable in result.stderr and "s3cret" not in result.stderr


def test_python_m_svc_exits_2_with_one_line():
    # Given a bad setting, when the service starts, I expect one line naming it and status 2.
    result = subprocess.run([sys.executable, "-m", "svc"], env={"SERVICE_NAME": "orders", "PREFETCH": "lots"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "PREFETCH" in result.stderr


def test_publish_refuses_bad_json_with_2():
    result = subprocess.run([sys.executable, "-m", "svc.publish", "--input", "{not json"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not valid JSON" in result.stderr and "nothing was published" in result.stderr


def test_every_variable_read_is_listed():
    import inspect

    from svc import config

    source = inspect.getsource(config.Config.from_env) + inspect.getsource(config.EtcdAccess.from_env)
    read = set(re.findall(r'get\("([A-Z_]+)"', source))
    assert read == set(config.VARIABLES)


@pytest.mark.parametrize("source, points", [("queue", ("claimed", "sent", "done")), ("log", ("read", "done", "acked"))])
def test_crash_at_is_said_and_checked_with_the_points_svc_crashes_at(source, points):
    # found: the setting's words said "claimed" or "done" while "sent" was accepted too
    from pathlib import Path

    from svc import faults

    assert (faults.CRASH_POINTS if source == "queue" else faults.LOG_CRASH_POINTS) == points
    for point in points:
        assert Config.from_env({"SERVICE_NAME": "orders", "SOURCE": source, "CRASH_AT": point}).crash_at == point
    other = "acked" if source == "queue" else "claimed"
    with pytest.raises(ConfigError, match=f"CRASH_AT='{other}' is invalid with SOURCE={source}: use one of '', "
                                          + ", ".join(points)):
        Config.from_env({"SERVICE_NAME": "orders", "SOURCE": source, "CRASH_AT": other})
    source_text = (Path(__file__).resolve().parent.parent / "svc" / "config.py").read_text()
    lines = source_text.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.strip().startswith("crash_at: str")]
    words = " ".join(lines[at:at + 2])   # the field and its comment
    assert "CRASH_POINTS" in words and all(f'"{point}"' in words for point in points)
