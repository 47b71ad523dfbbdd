"""Tidy the chapters' saved outputs: nothing on open may look broken or claim a state that is not true.

A notebook opened before anything runs shows what was saved: a widget view saved as text
(``VBox(children=(HBox(...``), "orders: ready" while no service runs, an SVG JupyterLab will not
render in an untrusted notebook (``<IPython.core.display.SVG object>``). :func:`tidy` removes those
kinds, and only those, so that the outputs nbval compares (the facts of the talk) stay as the
reference:

- outputs of cells whose outputs are never compared (tags ``nbval-ignore-output``, ``nbval-skip``):
  widget views, pids, "ready" lines, plots of an earlier run; the cell keeps its code and is run
  fresh on stage;
- any remaining widget view (its model is gone once the kernel is) and the notebook's saved widget
  state;
- a code cell that only displays an SVG file becomes a Markdown image of that file, which
  JupyterLab renders in an untrusted notebook too (JupyterLab renders SVG *output* only in trusted
  notebooks: https://jupyterlab.readthedocs.io/en/stable/user/notebook.html#trusted-notebooks);
- per-cell execution timestamps (they change on every run and only make merges conflict);
- the slideshow settings of the kit (:data:`RISE_SETTINGS`) in the notebook's metadata.

``python -m nirvana.notebook tidy [NOTEBOOK ...]`` (default: every chapter) rewrites the files in
place and names those it changed; ``check`` lists what tidy would change and exits 1 if anything.
It is idempotent, so it can be run again after every merge; ``tests/test_notebooks_lint.py`` fails
on any notebook that is not tidy.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

from . import paths

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
UNCOMPARED_TAGS = frozenset({"nbval-ignore-output", "nbval-skip"})
# The slideshow settings (jupyterlab_rise reads the notebook's "rise" metadata over its defaults):
# "serif" is the one reveal.js theme of jupyterlab_rise 0.43.1 that imports no font at all (the
# others ask fonts.googleapis.com, or a bundled font that the RISE app answers with 403); the slide
# styles themselves are notebooks/rise.css, which RISE loads next to the notebook.
RISE_SETTINGS = {"theme": "serif", "transition": "none", "scroll": True, "enable_chalkboard": False,
                 "center": False, "slideNumber": True}
# a cell that only shows an SVG file: `from IPython.display import SVG` then `SVG(filename="...")`
_SVG_CELL = re.compile(r"\s*(?:from IPython\.display import SVG\s*\n)?\s*SVG\(filename=(['\"])(?P<path>[^'\"]+)\1\)\s*;?\s*")


def problems(nb: dict) -> list[str]:
    """What makes a notebook look stale or broken on open, one line each (empty when tidy).

    ``nb`` is the notebook's JSON (nbformat 4) as a dict.
    """
    found = []
    if nb.get("metadata", {}).get("widgets"):
        found.append("notebook metadata keeps saved widget state")
    rise = nb.get("metadata", {}).get("rise", {})
    if any(rise.get(key) != value for key, value in RISE_SETTINGS.items()):
        found.append(f"slideshow settings (metadata.rise) are not the kit's: {RISE_SETTINGS}")
    for i, cell in enumerate(nb.get("cells", [])):
        if cell["cell_type"] != "code":
            continue
        if "execution" in cell.get("metadata", {}):
            found.append(f"cell {i}: execution timestamps saved")
        if _SVG_CELL.fullmatch("".join(cell["source"])):
            found.append(f"cell {i}: an SVG shown as output (not rendered untrusted): use a Markdown image")
        uncompared = UNCOMPARED_TAGS & set(cell.get("metadata", {}).get("tags", []))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = "".join(data.get("text/plain", out.get("text", "")))
            if WIDGET_VIEW in data:
                found.append(f"cell {i}: a widget view saved (shows as text {text[:30]!r}... on open)")
            elif "image/svg+xml" in data:
                found.append(f"cell {i}: an SVG output saved (shows as {text[:40]!r} untrusted)")
            elif uncompared:
                found.append(f"cell {i}: output of a cell nbval does not compare ({sorted(uncompared)[0]}) "
                             f"saved: {text.splitlines()[0][:50] if text.strip() else list(data)!r}")
    return found


def tidy(nb: dict) -> dict:
    """A tidy copy of the notebook JSON ``nb`` (see the module's docstring); ``nb`` is not changed."""
    nb = copy.deepcopy(nb)
    nb.setdefault("metadata", {}).pop("widgets", None)
    nb["metadata"]["rise"] = {**nb["metadata"].get("rise", {}), **RISE_SETTINGS}
    cells = []
    for cell in nb.get("cells", []):
        if cell["cell_type"] == "code":
            cell.get("metadata", {}).pop("execution", None)
            svg = _SVG_CELL.fullmatch("".join(cell["source"]))
            if svg:
                cell = _svg_as_markdown(cell, svg.group("path"))
            elif UNCOMPARED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                cell["outputs"] = []
            else:
                cell["outputs"] = [out for out in cell["outputs"] if WIDGET_VIEW not in out.get("data", {})
                                   and "image/svg+xml" not in out.get("data", {})]
        cells.append(cell)
    nb["cells"] = cells
    return nb


def _svg_as_markdown(cell: dict, path: str) -> dict:
    metadata = {key: value for key, value in cell.get("metadata", {}).items() if key in ("slideshow",)}
    alt = Path(path).stem.replace("_", " ")
    markdown = {"cell_type": "markdown", "metadata": metadata, "source": [f"![{alt}]({path})"]}
    if "id" in cell:
        markdown["id"] = cell["id"]
    return markdown


def dumps(nb: dict) -> str:
    """The notebook as JupyterLab writes it (1-space indent, keys sorted, a final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def tidy_file(path: Path) -> bool:
    """Rewrite the notebook at ``path`` tidy; True when it changed."""
    before = path.read_text(encoding="utf-8")
    after = dumps(tidy(json.loads(before)))
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def chapters() -> list[Path]:
    """Every notebook of the talk, in order, then the exercises' solutions (notebooks/solutions/)."""
    return sorted(paths.NOTEBOOKS.glob("*.ipynb")) + sorted((paths.NOTEBOOKS / "solutions").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    """``tidy`` or ``check`` the named notebooks (default every chapter); exit 2 on a bad argument."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("tidy", "check"):
        print("usage: python -m nirvana.notebook tidy|check [NOTEBOOK.ipynb ...]", file=sys.stderr)
        return 2
    targets = [Path(arg) for arg in args[1:]] or chapters()
    missing = [str(path) for path in targets if not path.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    untidy = 0
    for path in targets:
        if args[0] == "tidy":
            if tidy_file(path):
                print(f"tidied {path}")
        else:
            for line in problems(json.loads(path.read_text(encoding="utf-8"))):
                untidy += 1
                print(f"{path}: {line}")
    return 1 if untidy else 0


if __name__ == "__main__":
    sys.exit(main())
