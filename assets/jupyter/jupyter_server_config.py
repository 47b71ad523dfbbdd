"""JupyterLab's server settings when presenting (``./kit present`` passes this file with --config).

A patch at the edge, for a jupyter_server bug (2.x, seen with 2.21.1): its static file handler
(FileFindHandler) caches the absolute path of a file by the file's name alone, in one cache shared
by every static route. JupyterLab's page and the RISE slideshow ship the same font under the same
name (``9834b82ad26e2a37583d.woff2``): once JupyterLab's page has fetched it from /static/lab,
the slideshow's request under /static/rise finds JupyterLab's path in the cache, outside RISE's
own static folder, and answers 403 (the slideshow's icons fall back to boxes). Here the cache is
keyed by the folders searched and the name. tests/test_browser.py checks that the slideshow gets
no 4xx answer after JupyterLab's page has loaded.

A second patch at the edge, for the slideshow's own bundle: jupyterlab_rise 0.43.1 ships
@microsoft/fast-foundation 2.50.0 (inside @jupyter/web-components), whose design-token
``Store.delete`` notifies its subscribers, and a subscriber re-creates the token's binding, which
sets the token again: every slideshow load logged ~14 ``RangeError: Maximum call stack size
exceeded`` (handleChange -> set -> notify -> handleChange). fast-foundation 2.49 did not notify
there, and pinning 2.49.4 is the fix jupyterlab-contrib/search-replace#148 made for the same
recursion. The slideshow's scripts are served here with that one call blanked out (same length:
Content-Length and byte ranges stay true). tests/test_browser.py fails on any console error.

It also loads the kit's JupyterLab plugin labextensions/nirvana-run-when-ready (see its
static/remoteEntry.js): a Run All clicked while a notebook's kernel is still starting waits for the
kernel instead of being lost.

A third: every kernel this JupyterLab starts loads ipywidgets at once (the IPython extension
``ipywidgets``, which registers the widget comm targets). A slideshow's widget manager, when it
opens, asks the kernel for its widgets over a ``jupyter.widget.control`` comm; a kernel that has
not imported ipywidgets yet (just started or restarted, no cell run) has no such target and closes
the comm at once, and that close reaches every page sharing the kernel: JupyterLab's page, which
never opened the comm, logged "Comm not found for comm id ..." (and the slideshow "Control comm
was closed too early"). tests/test_browser.py opens a chapter's slideshow after a kernel restart.
"""

import functools
import os
import re

from jupyter_client.kernelspec import KernelSpecManager
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


# What fast-foundation 2.50.0 added to 2.49 (design-token.js), minified as in the bundle; each
# match's group "new" is blanked to spaces: Store.delete's notify, and DesignTokenNode.removeChild
# hydrating the parent's tokens into the removed child (the slideshow moves cells between slides).
_ADDED_IN_2_50 = [re.compile(pattern) for pattern in (
    rb"delete\((\w)\)\{this\.values\.delete\(\1\)(?P<new>,\w+\.Observable\.getNotifier\(this\)\.notify\(\1\.id\))\}",
    rb"const (\w)=\w+\.delete\((\w)\);(?P<new>for\(const\[(\w)\]of this\.store\.all\(\)\)\2\.hydrate\(\4,\2\.getRaw\(\4\)\),"
    rb"\2\.updateCSSTokenReflection\(\2\.store,\4\);)return \1\}",
)]
_RISE_STATIC = os.sep + os.path.join("jupyterlab_rise", "static") + os.sep
_get_content = FileFindHandler.get_content.__func__


def _blank(match: re.Match) -> bytes:
    start, end = match.span("new")
    whole = match.group(0)
    offset = match.start()
    return whole[:start - offset] + b" " * (end - start) + whole[end - offset:]


@functools.lru_cache(maxsize=64)
def _as_in_2_49(abspath: str, mtime: float) -> bytes:
    with open(abspath, "rb") as script:
        content = script.read()
    for pattern in _ADDED_IN_2_50:
        content = pattern.sub(_blank, content)
    return content


def _get_content_patched(cls, abspath, start=None, end=None):
    if _RISE_STATIC in abspath and abspath.endswith(".js"):
        return _as_in_2_49(abspath, os.stat(abspath).st_mtime)[start:end]
    return _get_content(cls, abspath, start, end)


FileFindHandler.get_content = classmethod(_get_content_patched)


WIDGETS_AT_START = "--InteractiveShellApp.extensions=ipywidgets"


class WidgetsAtStart(KernelSpecManager):
    """The kernel specs as found, a Python kernel's command line loading ipywidgets at its start."""

    def get_kernel_spec(self, kernel_name):
        spec = super().get_kernel_spec(kernel_name)
        if spec.language.lower() == "python" and WIDGETS_AT_START not in spec.argv:
            spec.argv = [*spec.argv, WIDGETS_AT_START]
        return spec


c.ServerApp.kernel_spec_manager_class = WidgetsAtStart  # noqa: F821 (c: the config, given by traitlets)

c.LabApp.extra_labextensions_path = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "labextensions")]  # noqa: F821 (c: the config)
