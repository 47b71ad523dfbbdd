"""graphite-web settings for the kit's native stack (loaded by Debian's graphite/settings.py).

`./kit up` runs gunicorn with GRAPHITE_SETTINGS_MODULE=nirvana_graphite_settings and this folder on
PYTHONPATH; NIRVANA_GRAPHITE_STORAGE names the folder under state/ that carbon writes to.
"""

import os

# graphite-web's own Django settings, loaded here (not after this module) so the kit can add to them
from graphite.app_settings import *  # noqa: F401,F403
from graphite.app_settings import MIDDLEWARE, SILENCED_SYSTEM_CHECKS as GRAPHITE_CHECKS

STORAGE_DIR = os.environ["NIRVANA_GRAPHITE_STORAGE"]
WHISPER_DIR = os.path.join(STORAGE_DIR, "whisper")
LOG_DIR = os.path.join(STORAGE_DIR, "log")
INDEX_FILE = os.path.join(STORAGE_DIR, "index")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(STORAGE_DIR, "graphite.db"),
    }
}
# Per-start key from the kit: graphite-web listens on loopback and keeps no accounts of value.
SECRET_KEY = os.environ.get("NIRVANA_GRAPHITE_SECRET", "")
TIME_ZONE = "UTC"
STATIC_ROOT = "/usr/share/graphite-web/static"

# Points not yet written to disk are read from carbon's cache, so a fresh counter is visible at once.
CARBONLINK_HOSTS = [os.environ.get("NIRVANA_CARBONLINK", "127.0.0.1:7002")]
CARBONLINK_TIMEOUT = 1.0
# No render cache: the demo wants the point of a second ago, not a minute-old answer.
DEFAULT_CACHE_DURATION = 0
CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
# Tags are not used; the tag database would need a migrated sqlite file.
TAGDB = ""
LOG_RENDERING_PERFORMANCE = False
LOG_CACHE_PERFORMANCE = False
FUNCTION_PLUGINS = []
# Quiet Django's system checks about graphite's own models (they would fill the log at each start).
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
SILENCED_SYSTEM_CHECKS = [*GRAPHITE_CHECKS, "admin.W411"]
# counts summed when a graph consolidates points, the last minutes when a graph names no time, the
# dashboard page working offline (nirvana_graphite_edge.py, beside this file): first, so it sees
# every request, the static files WhiteNoise answers included
MIDDLEWARE = ("nirvana_graphite_edge.KitDefaults", *MIDDLEWARE)
STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder",
                       "django.contrib.staticfiles.finders.AppDirectoriesFinder",
                       "nirvana_graphite_edge.StaticRootFinder"]
