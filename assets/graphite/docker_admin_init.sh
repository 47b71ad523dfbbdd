#!/bin/sh
# The kit's dashboard for docker-compose's graphite-statsd container (graphiteapp/graphite-statsd
# 1.1.10-5). docker-compose.yaml mounts this file over the image's
# /opt/graphite/bin/django_admin_init.sh, which the image's conf/etc/service/graphite/run calls
# after graphite-web's migrations and before gunicorn starts, with PYTHONPATH and
# DJANGO_SETTINGS_MODULE set: as `./kit up` does (nirvana/stack/graphite.py), it writes the
# dashboard "nirvana" from dashboard.json, mounted beside load_dashboard.py. (The image's script
# created a superuser root with the password root instead: the kit keeps no accounts.)
BIN=/opt/graphite/bin/python3
[ -f /opt/graphite/bin/pypy3 ] && BIN=/opt/graphite/bin/pypy3
exec "$BIN" /opt/nirvana/graphite/load_dashboard.py
