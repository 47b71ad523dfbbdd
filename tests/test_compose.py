"""docker-compose.yaml and the configs in assets/ agree with the native stack (Docker cannot run here,
so these read the files: the same ports, loopback only, the same 1 s metrics path)."""

import configparser
import re
import string

import pytest
import yaml

from nirvana import endpoints, paths, stack
from nirvana.stack import component

COMPOSE = paths.ROOT / "docker-compose.yaml"
MANAGEMENT_PORT = 15672   # RabbitMQ's management UI: published by docker-compose only


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def in_profile(compose: dict, profile: str | None) -> dict[str, dict]:
    """The services of ``profile`` (None: those without a profile, what `docker compose up` starts)."""
    return {name: service for name, service in compose["services"].items()
            if (profile in service.get("profiles", []) if profile else not service.get("profiles"))}


def published(compose: dict, profile: str | None = None) -> list[tuple[str, int, str]]:
    """(host address, host port, protocol) of every published port of ``profile``'s services."""
    result = []
    for service in in_profile(compose, profile).values():
        for mapping in service.get("ports", []):
            spec, _, protocol = str(mapping).partition("/")
            host_ip, host_port, _container = spec.split(":")
            result.append((host_ip, int(host_port), protocol or "tcp"))
    return result


def native_ports() -> set[tuple[int, str]]:
    """What the native stack listens on for its clients (etcd's peer port is internal)."""
    ports = {(port, "tcp") for c in stack.COMPONENTS for port in c.tcp_ports}
    ports |= {(port, "udp") for c in stack.COMPONENTS for port in c.udp_ports}
    return ports - {(endpoints.ETCD_PEER_PORT, "tcp")}


def test_compose_publishes_the_native_ports_on_loopback_only(compose):
    ports = published(compose)
    assert {host_ip for host_ip, _, _ in ports} == {endpoints.HOST}
    assert len(ports) == len(set(ports)), "a port is published twice"
    assert {(port, protocol) for _, port, protocol in ports} == native_ports() | {(MANAGEMENT_PORT, "tcp")}


def test_native_ports_are_the_endpoints(compose):
    expected = {(endpoints.AMQP_PORT, "tcp"), (endpoints.ETCD_PORT, "tcp"), (endpoints.STATSD_PORT, "udp"),
                (endpoints.STATSD_ADMIN_PORT, "tcp"), (endpoints.CARBON_PORT, "tcp"),
                (endpoints.CARBON_PICKLE_PORT, "tcp"), (endpoints.CARBON_QUERY_PORT, "tcp"),
                (endpoints.GRAPHITE_PORT, "tcp")}
    assert native_ports() == expected


def test_every_etcd_in_compose_has_the_settings_of_the_kits_etcd(compose):
    # Given the settings of the native etcd's config (assets/etcd: bounded history, a window of svc
    # per transaction, raft entries kept in memory), I expect each as a flag of every etcd in compose
    config = yaml.safe_load((paths.ASSETS / "etcd" / "etcd.conf.yml.in").read_text())
    tuned = {key: value for key, value in config.items()
             if key in ("auto-compaction-mode", "auto-compaction-retention", "max-txn-ops", "snapshot-count")}
    assert len(tuned) == 4
    etcds = [service for service in compose["services"].values() if "etcd" in " ".join(service.get("command") or [])]
    assert len(etcds) == 4   # the single node's and the cluster's three
    for service in etcds:
        for key, value in tuned.items():
            assert f"--{key}={value}" in service["command"]


# Where each image reads what the kit mounts, from the images' own sources:
# graphiteapp/graphite-statsd 1.1.10-5 (github.com/graphite-project/docker-graphite-statsd, tag
# 1.1.10-5): Dockerfile `COPY conf/opt/graphite/conf/* /opt/graphite/conf/`, carbon-cache started
# by conf/etc/service/carbon/run with the default config /opt/graphite/conf/carbon.conf, statsd by
# conf/etc/service/statsd/run as `node /opt/statsd/stats.js /opt/statsd/config/$STATSD_INTERFACE.js`
# with `ENV STATSD_INTERFACE udp`.
IMAGE_PATHS = {
    "./assets/carbon/docker-carbon.conf": "/opt/graphite/conf/carbon.conf",
    "./assets/carbon/storage-schemas.conf": "/opt/graphite/conf/storage-schemas.conf",
    "./assets/carbon/storage-aggregation.conf": "/opt/graphite/conf/storage-aggregation.conf",
    "./assets/statsd/docker.js": "/opt/statsd/config/udp.js",
    # graphite-web: conf/etc/service/graphite/run exports PYTHONPATH=/opt/graphite/webapp (where a
    # module named by GRAPHITE_SETTINGS_MODULE, and the middleware it names, are imported from), and
    # runs /opt/graphite/bin/django_admin_init.sh after `django-admin.py migrate`, before gunicorn
    "./assets/graphite/nirvana_graphite_docker_settings.py": "/opt/graphite/webapp/nirvana_graphite_docker_settings.py",
    "./assets/graphite/nirvana_graphite_edge.py": "/opt/graphite/webapp/nirvana_graphite_edge.py",
    "./assets/graphite/docker_admin_init.sh": "/opt/graphite/bin/django_admin_init.sh",
    "./assets/graphite/load_dashboard.py": "/opt/nirvana/graphite/load_dashboard.py",
    "./assets/graphite/dashboard.json": "/opt/nirvana/graphite/dashboard.json",
    # rabbitmq 3.13 reads every /etc/rabbitmq/conf.d/*.conf after rabbitmq.conf (the image ships
    # conf.d/10-defaults.conf there): https://www.rabbitmq.com/docs/configure#config-confd-directory
    "./assets/rabbitmq/docker-cluster.conf": "/etc/rabbitmq/conf.d/20-cluster.conf",
}
# The image's carbon start script edits carbon.conf with `sed -i` when one of these is set (and
# statsd reads another file, go-carbon replaces carbon): none may be, or the mount does not hold.
IMAGE_EDITS_CARBON_CONF = ("CARBON_DISABLE_TAGS", "CARBON_ENABLE_AMQP", "GOCARBON", "STATSD_INTERFACE", "BRUBECK")


def test_compose_mounts_the_kit_configs_where_the_images_read_them(compose):
    mounts = [volume.split(":") for service in compose["services"].values()
              for volume in service.get("volumes", []) if volume.startswith("./")]
    assert {source: target for source, target, *_ in mounts} == IMAGE_PATHS
    for source, _target, *mode in mounts:
        assert (paths.ROOT / source).is_file(), source
        assert mode == ["ro,z"], f"{source}: read-only, and relabelled for SELinux hosts"
    environment = compose["services"]["graphite"].get("environment", {})
    assert [name for name in IMAGE_EDITS_CARBON_CONF if name in environment] == []


def docker_graphite_settings(monkeypatch, image_settings: dict) -> dict:
    """The settings graphite-web takes from nirvana_graphite_docker_settings in the container, with
    the image's graphite.local_settings holding ``image_settings`` and graphite.app_settings
    graphite-web's Django settings (stand-ins: graphite-web is not installed here)."""
    import importlib.util
    import sys
    import types

    graphite = types.ModuleType("graphite")
    graphite.__path__ = []
    local = types.ModuleType("graphite.local_settings")
    local.__dict__.update(image_settings)
    app = types.ModuleType("graphite.app_settings")
    app.__dict__.update(MIDDLEWARE=("django.middleware.common.CommonMiddleware",), GRAPHITE_WEB_APP_SETTINGS_LOADED=True)
    for module in (graphite, local, app):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = importlib.util.spec_from_file_location("nirvana_graphite_docker_settings",
                                                  paths.ASSETS / "graphite" / "nirvana_graphite_docker_settings.py")
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    return vars(settings)


@pytest.mark.parametrize("statsd_host", ["127.0.0.1", ""])
def test_graphite_in_docker_has_the_kits_middleware_and_the_images_settings(compose, monkeypatch, statsd_host):
    # Given the container's graphite-web (the module compose names in GRAPHITE_SETTINGS_MODULE, on
    # the image's PYTHONPATH), its image's local_settings with or without django_statsd's middleware
    image = {"SECRET_KEY": "from the image", "CARBONLINK_HOSTS": ["127.0.0.1:7002"]}
    if statsd_host:   # the image's local_settings: `from graphite.app_settings import *`, statsd's middleware first
        image.update(MIDDLEWARE=("django_statsd.middleware.GraphiteMiddleware", "django.middleware.common.CommonMiddleware"),
                     GRAPHITE_WEB_APP_SETTINGS_LOADED=True)
    module = compose["services"]["graphite"]["environment"]["GRAPHITE_SETTINGS_MODULE"]
    assert IMAGE_PATHS[f"./assets/graphite/{module}.py"] == f"/opt/graphite/webapp/{module}.py"
    settings = docker_graphite_settings(monkeypatch, image)
    # I expect the kit's middleware first, as the native settings have it, then the image's; the
    # image's other settings kept; graphite-web's Django settings loaded (it would not load them again)
    native = (paths.ASSETS / "graphite" / "nirvana_graphite_settings.py").read_text()
    assert 'MIDDLEWARE = ("nirvana_graphite_edge.KitDefaults", *MIDDLEWARE)' in native
    assert settings["MIDDLEWARE"][0] == "nirvana_graphite_edge.KitDefaults"
    assert settings["MIDDLEWARE"][1:] == image.get("MIDDLEWARE", ("django.middleware.common.CommonMiddleware",))
    assert settings["SECRET_KEY"] == "from the image" and settings["GRAPHITE_WEB_APP_SETTINGS_LOADED"] is True
    assert "nirvana_graphite_edge.StaticRootFinder" in settings["STATICFILES_FINDERS"]
    # the middleware it names beside it, on the same path
    assert IMAGE_PATHS["./assets/graphite/nirvana_graphite_edge.py"] == "/opt/graphite/webapp/nirvana_graphite_edge.py"


def test_graphite_in_docker_writes_the_kits_dashboard_at_each_start():
    # Given the script compose mounts where the image runs its admin init (after the migrations),
    # I expect it executable, running load_dashboard.py where compose mounts it, dashboard.json beside it
    script = paths.ASSETS / "graphite" / "docker_admin_init.sh"
    assert script.stat().st_mode & 0o111 == 0o111, "the image runs it directly: it must be executable"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    loader = IMAGE_PATHS["./assets/graphite/load_dashboard.py"]
    assert re.search(rf'^exec "\$BIN" {re.escape(loader)}$', text, re.M), text
    assert IMAGE_PATHS["./assets/graphite/dashboard.json"] == loader.rsplit("/", 1)[0] + "/dashboard.json"
    assert 'Path(__file__).with_name("dashboard.json")' in (paths.ASSETS / "graphite" / "load_dashboard.py").read_text()


def test_every_service_has_a_healthcheck_and_a_pinned_image(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        image, _, tag = service["image"].rpartition(":")
        assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not an explicit release"


def _carbon_cache(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return dict(parser["cache"])


def test_carbon_in_docker_has_the_native_settings():
    # The native carbon.conf rendered as `./kit up` renders it, against the one docker-compose mounts:
    # every setting equal (MAX_CREATES_PER_MINUTE above all: the image's 50 drops new counters'
    # first points), but for the folders (the image's defaults) and the interfaces (the container's).
    native = _carbon_cache(string.Template((paths.ASSETS / "carbon" / "carbon.conf.in").read_text())
                           .substitute(CONF_DIR="CONF", STORAGE_DIR="STORAGE", WHISPER_DIR="WHISPER",
                                       LOG_DIR="LOG", **component.ports()))
    docker = _carbon_cache((paths.ASSETS / "carbon" / "docker-carbon.conf").read_text())
    folders = {"CONF_DIR", "STORAGE_DIR", "LOCAL_DATA_DIR", "WHITELISTS_DIR", "LOG_DIR", "PID_DIR"}
    interfaces = {key for key in native if key.endswith("_INTERFACE")}
    assert set(docker) == set(native) - folders
    assert {key: docker[key] for key in interfaces} == dict.fromkeys(interfaces, "0.0.0.0")
    same = set(native) - folders - interfaces
    assert {key: docker[key] for key in same} == {key: native[key] for key in same}
    assert int(docker["MAX_CREATES_PER_MINUTE"]) >= 1000


def statsd_settings(name: str) -> dict[str, str]:
    """The top-level `key: value` pairs of a statsd config (a JavaScript object literal)."""
    text = re.sub(r"/\*.*?\*/", "", (paths.ASSETS / "statsd" / name).read_text(), flags=re.S)
    return {key: value.strip().strip('"') for key, value in re.findall(r"^\s*(\w+):\s*([^,\n]+)", text, re.M)}


@pytest.mark.parametrize("name, listen", [("config.js", endpoints.HOST), ("docker.js", "0.0.0.0")])
def test_statsd_configs_use_the_endpoints_and_a_1s_flush(name, listen):
    settings = statsd_settings(name)
    assert settings["port"] == str(endpoints.STATSD_PORT)
    assert settings["mgmt_port"] == str(endpoints.STATSD_ADMIN_PORT)
    assert settings["graphitePort"] == str(endpoints.CARBON_PORT)
    assert settings["graphiteHost"] == endpoints.HOST   # carbon: the same machine, or container
    assert settings["address"] == settings["mgmt_address"] == listen
    assert settings["flushInterval"] == "1000"


def test_carbon_keeps_1s_points_for_statsd_and_sums_counts():
    schemas = configparser.ConfigParser()
    schemas.read(paths.ASSETS / "carbon" / "storage-schemas.conf")
    stats_rule = next(section for section in schemas.sections()
                      if re.match(schemas[section]["pattern"], "stats_counts.orders_new_order_ok"))
    assert re.match(schemas[stats_rule]["pattern"], "stats.orders_new_order_ok")
    assert schemas[stats_rule]["retentions"].split(",")[0] == "1s:6h"
    aggregation = configparser.ConfigParser()
    aggregation.read(paths.ASSETS / "carbon" / "storage-aggregation.conf")
    counts_rule = next(section for section in aggregation.sections()
                       if re.search(aggregation[section]["pattern"], "stats_counts.orders_new_order_ok"))
    assert aggregation[counts_rule]["aggregationMethod"] == "sum"


CLUSTER = ("etcd-1", "etcd-2", "etcd-3", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3")


def _flags(service: dict) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in service["command"] if arg.startswith("--"))


def test_the_cluster_profile_is_the_native_clusters_shape(compose):
    # Given the `cluster` profile, I expect exactly its six members, none started by a plain `up`
    cluster = in_profile(compose, "cluster")
    assert sorted(cluster) == sorted(CLUSTER)
    assert all(service["profiles"] == ["cluster"] for service in cluster.values())
    assert not set(CLUSTER) & set(in_profile(compose, None))
    # publishing the ports of `./kit up --cluster` (nirvana/endpoints.py), on loopback only, each once
    ports = published(compose, "cluster")
    assert {host for host, _, _ in ports} == {endpoints.HOST} and len(ports) == len(set(ports))
    assert sorted(port for _, port, _ in ports) == sorted(endpoints.CLUSTER_ETCD_PORTS + endpoints.CLUSTER_AMQP_PORTS)
    # and every data volume its member's own
    volumes = [volume.split(":")[0] for name in CLUSTER for volume in cluster[name]["volumes"]
               if not volume.startswith("./")]
    assert len(volumes) == len(CLUSTER) == len(set(volumes))
    assert set(volumes) <= set(compose["volumes"])


def test_the_cluster_profiles_etcd_members_form_one_cluster(compose):
    members = [_flags(compose["services"][f"etcd-{i}"]) for i in (1, 2, 3)]
    # each member's name and peer URL are the ones the shared initial cluster lists
    initial = {flags["initial-cluster"] for flags in members}
    assert len(initial) == 1
    listed = dict(pair.split("=", 1) for pair in initial.pop().split(","))
    assert listed == {flags["name"]: flags["initial-advertise-peer-urls"] for flags in members}
    assert {flags["initial-cluster-token"] for flags in members} == {"nirvana-cluster"}
    # each advertises the client address it is published on
    for i, flags in enumerate(members):
        published_port = compose["services"][f"etcd-{i + 1}"]["ports"][0].split(":")[1]
        assert flags["advertise-client-urls"] == f"http://{endpoints.HOST}:{published_port}"
        assert published_port == str(endpoints.CLUSTER_ETCD_PORTS[i])


def test_the_cluster_profiles_rabbitmq_nodes_know_each_other(compose):
    nodes = [compose["services"][f"rabbitmq-{i}"] for i in (1, 2, 3)]
    # one cookie for all three, or they refuse each other
    assert len({node["environment"]["RABBITMQ_ERLANG_COOKIE"] for node in nodes}) == 1
    # the peer discovery config lists every node by the name its hostname gives it
    conf = (paths.ASSETS / "rabbitmq" / "docker-cluster.conf").read_text()
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", conf, re.M)
    assert sorted(listed) == sorted(f"rabbit@{node['hostname']}" for node in nodes)
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    assert all(node["image"] == compose["services"]["rabbitmq"]["image"] for node in nodes)
