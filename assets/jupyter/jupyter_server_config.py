"""JupyterLab's server settings when presenting (``./kit present`` passes this file with --config).

A patch at the edge, for a jupyter_server bug (2.x, seen with 2.21.1): its static file handler
(FileFindHandler) caches the absolute path of a file by the file's name alone, in one cache shared
by every static route. JupyterLab's page and the RISE slideshow ship the same font under the same
name (``9834b82ad26e2a37583d.woff2``): once JupyterLab's page has fetched it from /static/lab,
the slideshow's request under /static/rise finds JupyterLab's path in the cache, outside RISE's
own static folder, and answers 403 (the slideshow's icons fall back to boxes). Here the cache is
keyed by the folders searched and the name. tests/test_browser.py checks that the slideshow gets
no 4xx answer after JupyterLab's page has loaded.

It also loads the kit's JupyterLab plugin labextensions/nirvana-run-when-ready (see its
static/remoteEntry.js): a Run All clicked while a notebook's kernel is still starting waits for the
kernel instead of being lost.
"""

import os

from jupyter_server.base.handlers import FileFindHandler
from jupyter_server.utils import filefind

_found: dict[tuple[tuple[str, ...], str], str] = {}


def _get_absolute_path(cls, roots, path):
    key = (tuple(roots), path)
    with cls._lock:
        if key not in _found:
            try:
                _found[key] = os.path.abspath(filefind(path, roots))
            except OSError:   # not found: 404, and looked for again next time
                return ""
        return _found[key]


FileFindHandler.get_absolute_path = classmethod(_get_absolute_path)

c.LabApp.extra_labextensions_path = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "labextensions")]  # noqa: F821 (c: the config)
