"""graphite-web as the talk needs it, at the edge: a Django middleware the kit's settings add
(nirvana_graphite_settings.py), for Debian's graphite-web 1.1.8, and in docker-compose's
graphiteapp/graphite-statsd (graphite-web 1.1.10, whose ``TimeSeries.__init__`` takes the same
arguments; nirvana_graphite_docker_settings.py adds it there).

- **A count is summed, never averaged.** When a graph has more points than it has pixels (60
  minutes of 1 s points on an 800 px graph), graphite-web consolidates each series with its
  ``consolidationFunc``, "average" unless the target says ``consolidateBy(...)``: a counter that
  counted 40 events in a minute read as 0.67 a point. Every series read from ``stats_counts.``
  (statsd's count per flush) is consolidated by sum, as carbon's storage-aggregation.conf rolls it
  up into minutes and as statsd's Graphite guide says of counts.
- **A graph without ``from`` shows the last minutes** (:data:`DEFAULT_FROM`), not graphite-web's
  24 hours: the demo happened minutes ago, in 1 s points.
- **The dashboard page works, offline**: graphite-web 1.1.8's dashboard.js calls a global
  ``htmlEncode`` that no script defines, so no dashboard loads or saves (graphite-web#2711; the fix
  there: Ext's ``Ext.util.Format.htmlEncode``), which the page is given here; its JSON editor
  (ace.js) imports a font from fonts.googleapis.com, a request that leaves the machine (and fails
  offline), served here without that ``@import``; its theme's style sheet is looked up through
  Django's static file finders, which do not search Debian's STATIC_ROOT (every page said
  "Invalid theme 'default'"): :class:`StaticRootFinder` does; and ``/favicon.ico``, which browsers
  ask for, answers 204 instead of 404.

tests/test_graphite_ui.py checks both against the real graphite-web.
"""

import os
import re

from django.contrib.staticfiles.finders import BaseFinder

DEFAULT_FROM = "-15minutes"
COUNTS = "stats_counts."
HTML_ENCODE = (b'<script type="text/javascript">/* graphite-web#2711 */ '
               b'var htmlEncode = function (value) { return Ext.util.Format.htmlEncode(value); };</script>\n')
FONT_IMPORT = re.compile(rb"@import url\(//fonts\.googleapis\.com/[^)]*\);")
ACE = "/static/js/ace/ace.js"


def _sum_counts() -> None:
    """Make every series whose name starts with :data:`COUNTS` consolidate by sum (once)."""
    from graphite.render.datalib import TimeSeries   # only once Django is set up

    if getattr(TimeSeries, "nirvana_counts_summed", False):
        return
    original = TimeSeries.__init__

    def __init__(self, name, start, end, step, values, consolidate="average", *args, **kwargs):
        if consolidate == "average" and isinstance(name, str) and name.startswith(COUNTS):
            consolidate = "sum"
        original(self, name, start, end, step, values, consolidate, *args, **kwargs)

    TimeSeries.__init__ = __init__
    TimeSeries.nirvana_counts_summed = True


class StaticRootFinder(BaseFinder):
    """Finds a static file in STATIC_ROOT (/usr/share/graphite-web/static on Debian)."""

    def find(self, path, all=False):   # noqa: A002 (Django's signature)
        from django.conf import settings

        full = os.path.join(settings.STATIC_ROOT, path)
        found = os.path.isfile(full) and os.path.realpath(full).startswith(os.path.realpath(settings.STATIC_ROOT) + os.sep)
        if all:
            return [full] if found else []
        return full if found else None

    def list(self, ignore_patterns):
        return []


def _ace_offline() -> bytes:
    from django.conf import settings

    with open(os.path.join(settings.STATIC_ROOT, *ACE.split("/")[2:]), "rb") as script:
        return FONT_IMPORT.sub(b"", script.read())


class KitDefaults:
    """The middleware, first of graphite-web's (outermost): counts summed (:func:`_sum_counts`),
    ``from`` defaulted on ``/render``, the dashboard page given ``htmlEncode``, ace.js without its
    web font, ``/favicon.ico`` answered."""

    def __init__(self, get_response):
        self.get_response = get_response
        _sum_counts()

    def __call__(self, request):
        from django.http import HttpResponse

        path = request.path
        if path == "/favicon.ico":
            return HttpResponse(status=204)
        if path == ACE:
            return HttpResponse(_ace_offline(), content_type="application/javascript")
        if path.startswith("/render") and "from" not in request.GET and "from" not in request.POST:
            query = request.GET.copy()
            query["from"] = DEFAULT_FROM
            request.GET = query
        page = path.startswith("/dashboard") and not path.startswith(("/dashboard/load", "/dashboard/find",
                                                                       "/dashboard/save", "/dashboard/delete",
                                                                       "/dashboard/create"))
        if page:
            request.META.pop("HTTP_ACCEPT_ENCODING", None)   # plain, so the page can be added to
        response = self.get_response(request)
        if page and response.get("Content-Type", "").startswith("text/html") and not response.streaming:
            response.content = response.content.replace(b"</head>", HTML_ENCODE + b"</head>", 1)
            if response.has_header("Content-Length"):   # set by an inner middleware for the old content
                response["Content-Length"] = str(len(response.content))
        return response
