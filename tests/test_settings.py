"""nirvana.settings: svc's variables read once; helpers, panels, services and notebooks agree on them.

Found by running chapter 3 with ETCD_PREFIX=/x exported (a learner who set it for svc): the
services wrote under /x, the notebook's helpers read /nirvana; PublishPanel ignored EVENTS_EXCHANGE.
"""

import os
import subprocess
import sys

import pytest

from nirvana import paths, rabbit, settings, widgets
from nirvana.errors import SettingError
from svc import topology
from svc.config import DEFAULT_AMQP_URL, DEFAULT_ETCD_PREFIX, Config
from svc.event import EVENT_TYPES
from svc.publisher import DEFAULT_ROUTING_KEY


def test_the_defaults_are_svcs_own():
    # Given no svc variable set, I expect svc's defaults, read through svc.Config
    kit = settings.Settings.from_env({})
    svc_config = Config(service="orders")
    assert (kit.amqp_url, kit.exchange, kit.etcd_prefix) == (DEFAULT_AMQP_URL, topology.DEFAULT_EXCHANGE,
                                                             DEFAULT_ETCD_PREFIX)
    assert kit.etcd_endpoints == svc_config.etcd_endpoints
    assert (kit.statsd_host, kit.statsd_port) == (svc_config.statsd_host, svc_config.statsd_port)
    assert (kit.services, kit.event_types, kit.routing_key) == (topology.DEFAULT_SERVICES, EVENT_TYPES,
                                                                DEFAULT_ROUTING_KEY)


def test_a_service_gets_the_values_the_kit_reads():
    kit = settings.Settings.from_env({"ETCD_PREFIX": "/x/", "EVENTS_EXCHANGE": "talk", "ETCD_ENDPOINTS": "a:1,b:2"})
    env = kit.service_environment()
    assert set(env) == set(settings.SHARED)
    # and svc, reading them back, lands on the same values
    again = Config.from_env({**env, "SERVICE_NAME": "orders"})
    assert (again.etcd_prefix, again.exchange, again.etcd_endpoints) == ("/x", "talk", (("a", 1), ("b", 2)))


@pytest.mark.parametrize("variable, value", [("ETCD_PREFIX", "/"), ("EVENTS_EXCHANGE", "a b"),
                                             ("STATSD_PORT", "0"), ("AMQP_URL", "http://x")])
def test_a_bad_variable_is_one_line_naming_it(variable, value):
    with pytest.raises(SettingError) as bad:
        settings.Settings.from_env({variable: value})
    assert variable in str(bad.value) and "\n" not in str(bad.value)


def test_the_publish_panel_publishes_to_the_exported_exchange(kit_env):
    # Given EVENTS_EXCHANGE exported, when the panel publishes the talk's event
    panel = widgets.PublishPanel()
    panel.publish_button.click()
    # I expect it confirmed, and waiting in that exchange's queues (no service consumes them)
    assert panel.last_result is not None and panel.last_result.ok, panel.last_error
    assert rabbit.queue_depth("orders") == 1
    assert rabbit.queue_of("orders") == f"{kit_env['exchange']}.orders"


@pytest.mark.slow
def test_chapter_3_passes_strict_nbval_with_prefix_and_exchange_exported(kit_env, graphite_url):
    # Given ETCD_PREFIX and EVENTS_EXCHANGE exported, when chapter 3 runs under strict nbval
    env = {**os.environ, **kit_env["env"]}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         *(["--nbval-sanitize-with", "notebooks/sanitize.cfg"] if (paths.NOTEBOOKS / "sanitize.cfg").exists()
           else []),
         "notebooks/03_idempotency.ipynb"],
        cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=170)
    # I expect every cell to give the same facts as with the defaults
    assert run.returncode == 0, run.stdout[-3000:]


def test_etcds_user_password_and_tls_files_reach_the_services_the_kit_starts(tmp_path):
    # Given etcd's user, password and CA file exported for the kit...
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
    kit = settings.Settings.from_env({"ETCD_USER": "root", "ETCD_PASSWORD": "pw-secret", "ETCD_CACERT": str(ca)})
    # ... I expect the kit's own etcd clients to use them, the password nowhere in a repr...
    assert (kit.etcd_access.user, kit.etcd_access.tls, kit.etcd_access.ca) == ("root", True, ca.read_bytes())
    assert "pw-secret" not in repr(kit)
    # ... and every service the kit starts handed the same, read back by svc to the same values.
    env = kit.service_environment()
    assert set(env) == set(settings.SHARED)
    again = Config.from_env({**env, "SERVICE_NAME": "orders"})
    assert again.etcd_access == kit.etcd_access
