"""graphite-web settings for docker-compose's graphiteapp/graphite-statsd container (graphite-web 1.1.10).

docker-compose.yaml mounts this file and nirvana_graphite_edge.py into /opt/graphite/webapp (on
the image's PYTHONPATH: conf/etc/service/graphite/run exports it) and names this module in
GRAPHITE_SETTINGS_MODULE, which graphite-web's settings.py imports in place of
graphite.local_settings. So the container's graphite-web is the image's own (its local_settings:
paths, secret, carbonlink, all from the environment) plus what the kit's native settings add
(nirvana_graphite_settings.py): the middleware that sums counts, defaults a graph to the last
minutes and makes the dashboard page work offline, first, so it sees every request.
"""

# the image's settings, as graphite-web would have loaded them without GRAPHITE_SETTINGS_MODULE
from graphite.local_settings import *  # noqa: F401,F403

# graphite-web's Django settings (MIDDLEWARE...): the image's settings take them unless
# GRAPHITE_STATSD_HOST is empty; then taken here, as graphite-web's settings.py would
if "MIDDLEWARE" not in globals():
    from graphite.app_settings import *  # noqa: F401,F403

MIDDLEWARE = ("nirvana_graphite_edge.KitDefaults", *MIDDLEWARE)  # noqa: F405
STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder",
                       "django.contrib.staticfiles.finders.AppDirectoriesFinder",
                       "nirvana_graphite_edge.StaticRootFinder"]
