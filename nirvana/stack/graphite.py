"""graphite-web: probed with ``/metrics/find``; Debian's graphite-web served by Debian's gunicorn."""

import os
import secrets
import shlex
from pathlib import Path

import requests

from .. import endpoints, paths
from .carbon import storage
from .component import DOWN, HOST, Component, Launch, Probe, tcp_open


def probe() -> Probe:
    if not tcp_open(endpoints.GRAPHITE_PORT):
        return DOWN
    try:
        answer = requests.get(f"{endpoints.GRAPHITE_URL}/metrics/find",
                              params={"query": "*", "format": "treejson"}, timeout=3)
        healthy = answer.status_code == 200 and isinstance(answer.json(), list)
    except (requests.RequestException, ValueError):
        healthy = False
    return Probe("up") if healthy else Probe("unhealthy", "/metrics/find did not answer 200 with JSON")


def launch(state: Path) -> Launch:
    folder = storage(state)
    (folder / "log").mkdir(parents=True, exist_ok=True)
    env = {
        # whitenoise from .tools/ (./kit setup): graphite-web serves its UI's static files through it
        "PYTHONPATH": os.pathsep.join([str(paths.ASSETS / "graphite"), str(paths.ROOT / ".tools" / "graphite-python")]),
        "DJANGO_SETTINGS_MODULE": "graphite.settings",
        "GRAPHITE_SETTINGS_MODULE": "nirvana_graphite_settings",
        "NIRVANA_GRAPHITE_STORAGE": str(folder),
        "NIRVANA_GRAPHITE_SECRET": secrets.token_hex(16),
        "NIRVANA_CARBONLINK": f"{HOST}:{endpoints.CARBON_QUERY_PORT}",
    }
    gunicorn = ["gunicorn", "--bind", f"{HOST}:{endpoints.GRAPHITE_PORT}", "--workers", "2",
                "--timeout", "30", "--graceful-timeout", "5", "graphite.wsgi:application"]
    # graphite-web keeps users, profiles and dashboards in sqlite: create its tables once (under a
    # second), write the kit's dashboard (assets/graphite/dashboard.json), then exec, so the pid the
    # kit records is gunicorn's.
    script = ('[ -s "$NIRVANA_GRAPHITE_STORAGE/graphite.db" ] || '
              '/usr/bin/python3 -m django migrate --noinput -v 0 || exit 1; '
              f'/usr/bin/python3 {shlex.quote(str(paths.ASSETS / "graphite" / "load_dashboard.py"))} || exit 1; '
              'exec "$@"')
    return Launch(["/bin/sh", "-c", script, "graphite-web", *gunicorn], env)


COMPONENT = Component("graphite-web", endpoints.GRAPHITE_URL,
                      (endpoints.GRAPHITE_PORT,), probe, launch,
                      (("gunicorn", "apt package gunicorn"),
                       ("/usr/lib/python3/dist-packages/graphite", "apt package graphite-web")), deadline=40)
