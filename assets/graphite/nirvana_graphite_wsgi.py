"""TEMPORARY (verification only): graphite-web's WSGI app without graphite.wsgi's whitenoise<4 API."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "graphite.settings")
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
