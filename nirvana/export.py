"""The audience's handout: every chapter run, as pages that open from disk with nothing installed.

``./kit export`` (``python -m nirvana export``) runs each chapter against the stack, as Run All
would, keeping its outputs and the state of its widgets (nbclient's ``store_widget_state``), then
writes, under ``<state>/export/`` (or ``--out``)::

    index.html                         the chapters, with links to the three forms of each
    notebooks/<chapter>.html           the executed notebook, a static page (nbconvert's lab template)
    notebooks/<chapter>.slides.html    its slides, a reveal.js deck (the chapter's slide metadata)
    notebooks/<chapter>.slides.pdf     those slides printed by headless chromium (reveal.js ?print-pdf)
    assets/diagrams/                   the pictures the chapters link to, at the same relative path
    notebooks/GLOSSARY.md              the glossary the chapters link to
    lib/                               reveal.js, require.js, @jupyter-widgets/html-manager

Nothing in them names an address outside the export: reveal.js, require.js and the widget
renderer (which draws the saved panels and charts) come from npm at the versions ``kit`` pins,
installed under ``.tools/export`` by ``./kit setup``, and are copied into ``lib/``; nbconvert's
MathJax and mermaid loaders are left out (no chapter has math or mermaid). tests/test_export.py
loads the files in chromium and fails on any http(s) request.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from html.parser import HTMLParser
from dataclasses import dataclass
from pathlib import Path

from . import paths
from ._wait import Progress
from .errors import KitError

TOOLS = paths.ROOT / ".tools" / "export" / "node_modules"
TEMPLATES = paths.ASSETS / "export" / "templates"
# what lib/ holds: (source under TOOLS, destination under lib/)
LIBRARIES = (
    ("reveal.js/dist", "reveal.js/dist"),
    ("reveal.js/plugin/notes", "reveal.js/plugin/notes"),
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist", "html-manager/dist"),
)
CELL_TIMEOUT = 300          # seconds for one cell (chapter 09 starts a cluster of its own)
PDF_TIMEOUT_MS = 120_000    # chromium printing one deck
# every saved widget view drawn: the renderer adds the widget beside its <script> (nbconvert's templates)
WIDGETS_DRAWN = """Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
    .every(view => view.parentElement.children.length > 1)"""
# the deck printed as the template lays it out: a page per slide, each fitted (body[data-pdf-ready])
PDF_READY = "document.body.dataset.pdfReady === '1'"
CHAPTER_LINK = re.compile(r'href="(\d\d_[a-z0-9_]+)\.ipynb(#[^"]*)?"')


class ExportError(KitError):
    """The export could not be made (a tool missing, a chapter failing); the message says what to do."""


@dataclass(frozen=True)
class Exported:
    """One chapter's files, paths relative to the export folder, and the seconds its run took."""

    chapter: str
    page: str
    slides: str
    pdf: str
    seconds: float


def export_dir() -> Path:
    """The default folder: ``<state>/export``."""
    return paths.state_dir() / "export"


def chapters() -> list[str]:
    """Every chapter's file name, in order (``notebooks/*.ipynb``)."""
    return [path.name for path in sorted(paths.NOTEBOOKS.glob("*.ipynb"))]


def _check_tools() -> None:
    missing = [source for source, _ in LIBRARIES if not (TOOLS / source).exists()]
    if missing:
        raise ExportError(f"{', '.join(missing)} missing under .tools/export: run ./kit setup")


def copy_libraries(out: Path) -> None:
    """Copy the pinned scripts into ``out/lib``, the diagrams and the glossary beside the chapters."""
    _check_tools()
    for source, target in LIBRARIES:
        (out / "lib" / target).parent.mkdir(parents=True, exist_ok=True)
        if (TOOLS / source).is_dir():
            shutil.copytree(TOOLS / source, out / "lib" / target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.map", "*.esm.js"))
        else:
            shutil.copyfile(TOOLS / source, out / "lib" / target)
    pictures = paths.ASSETS / "diagrams"
    shutil.copytree(pictures, out / "assets" / "diagrams", dirs_exist_ok=True)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    if (paths.NOTEBOOKS / "GLOSSARY.md").exists():   # every chapter links to it
        shutil.copyfile(paths.NOTEBOOKS / "GLOSSARY.md", out / "notebooks" / "GLOSSARY.md")


def run(chapter: str, *, progress: Progress = print):
    """Run ``chapter`` (a file name in notebooks/) as Run All does, in the kit's kernel, from
    notebooks/ as its folder; returns the executed notebook (nbformat), widget state included.
    Raises ExportError naming the cell that failed (a cell tagged ``raises-exception`` may)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    source = paths.NOTEBOOKS / chapter
    if not source.is_file():
        raise ExportError(f"no chapter {chapter!r}: choose from {', '.join(chapters())}")
    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT, store_widget_state=True,
                            resources={"metadata": {"path": str(paths.NOTEBOOKS)}})
    progress(f"{chapter}: running")
    try:
        client.execute()
    except CellExecutionError as error:
        raise ExportError(f"{chapter}: a cell failed, nothing exported for it: {str(error).strip().splitlines()[-1]}") from None
    return notebook


def _exporters():
    from nbconvert import HTMLExporter, SlidesExporter

    lib = "../lib"
    common = {"extra_template_basedirs": [str(TEMPLATES)], "require_js_url": f"{lib}/require.js",
              "widget_renderer_url": f"{lib}/html-manager/dist/embed-amd.js",
              # only for a widget module the renderer does not carry (the kit's widgets are ipywidgets' own)
              "jupyter_widgets_base_url": f"{lib}/"}
    page = HTMLExporter(template_name="nirvana_lab", **common)
    slides = SlidesExporter(template_name="nirvana_reveal", reveal_url_prefix=f"{lib}/reveal.js",
                            reveal_theme="serif", reveal_transition="none", reveal_width="1280", reveal_height="720",
                            **common)
    return page, slides


def print_pdf(slides: Path, pdf: Path) -> None:
    """Print the deck ``slides`` (a file) to ``pdf`` with headless chromium (reveal.js's
    ``?print-pdf``): exactly one page per slide, each 1331x748 CSS px (the 1280x720 slide and
    reveal.js's 4 % margin), fragments shown, speaker notes left out. A slide taller than 720 px is
    scaled down to fit its page (the template, ``assets/export/templates/nirvana_reveal``), where
    reveal.js alone would spread it over ceil(height / 748) pages and print a fragment's slide once
    per fragment step. Raises ExportError when chromium is missing."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise ExportError("chromium is missing: run ./kit setup (it installs Debian's chromium)")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(slides.resolve().as_uri() + "?print-pdf", timeout=PDF_TIMEOUT_MS)
            page.wait_for_function("document.body.dataset.deckReady === '1'", timeout=PDF_TIMEOUT_MS)
            # the pages laid out, every widget drawn, every slide fitted to its page (the template)
            page.wait_for_function(PDF_READY, timeout=PDF_TIMEOUT_MS)
            page.wait_for_load_state("networkidle", timeout=PDF_TIMEOUT_MS)
            page.pdf(path=str(pdf), prefer_css_page_size=True, print_background=True)
        finally:
            browser.close()


class _Slides(HTMLParser):
    """Counts the slides of a reveal.js deck: the ``<section>`` elements holding no other (a
    ``<section>`` that holds some is a vertical stack, not a slide of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[bool] = []   # per open <section>: holds another?
        self.count = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "section":
            if self.open:
                self.open[-1] = True
            self.open.append(False)

    def handle_endtag(self, tag) -> None:
        if tag == "section" and self.open:
            self.count += not self.open.pop()


def slide_count(deck: str) -> int:
    """The number of slides in ``deck`` (the reveal.js HTML ``./kit export`` writes): its
    innermost ``<section>`` elements, the pages its PDF must have."""
    parser = _Slides()
    parser.feed(deck)
    parser.close()
    return parser.count


def pdf_pages(pdf: Path) -> int:
    """The number of pages of the PDF file ``pdf`` (pypdf). Raises ExportError if it is no PDF."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        return len(PdfReader(pdf).pages)
    except (PdfReadError, OSError) as error:
        raise ExportError(f"{pdf}: not a readable PDF ({error}); run ./kit export again") from None


def export_chapter(chapter: str, out: Path, *, progress: Progress = print) -> Exported:
    """Run ``chapter`` and write its page, slides and PDF under ``out/notebooks``."""
    started = time.monotonic()
    page_exporter, slides_exporter = _exporters()   # a bad setting shows before the chapter runs
    notebook = run(chapter, progress=progress)
    stem = Path(chapter).stem
    folder = out / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    page, slides, pdf = folder / f"{stem}.html", folder / f"{stem}.slides.html", folder / f"{stem}.slides.pdf"
    # a link to another chapter leads to its page (or its slides), not to an .ipynb file
    page.write_text(CHAPTER_LINK.sub(r'href="\1.html\2"', page_exporter.from_notebook_node(notebook)[0]), encoding="utf-8")
    slides.write_text(CHAPTER_LINK.sub(r'href="\1.slides.html"', slides_exporter.from_notebook_node(notebook)[0]),
                      encoding="utf-8")
    print_pdf(slides, pdf)
    wanted, printed = slide_count(slides.read_text(encoding="utf-8")), pdf_pages(pdf)
    if printed != wanted:   # a slide over two pages, or one repeated: the handout would mislead
        raise ExportError(f"{chapter}: the PDF has {printed} pages for {wanted} slides (one page per slide "
                          f"expected): see {pdf}")
    seconds = time.monotonic() - started
    progress(f"{chapter}: exported in {seconds:.0f} s")
    return Exported(chapter, *(str(path.relative_to(out)) for path in (page, slides, pdf)), seconds)


def _index(out: Path, done: list[Exported]) -> None:
    rows = "\n".join(
        f'<li>{html.escape(json.loads((paths.NOTEBOOKS / one.chapter).read_text()).get("metadata", {}).get("title", one.chapter))}: '
        f'<a href="{one.page}">notebook</a> · <a href="{one.slides}">slides</a> · <a href="{one.pdf}">slides as PDF</a></li>'
        for one in done)
    (out / "index.html").write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Reliability Nirvana</title></head>\n"
        "<body style=\"font-family: 'DejaVu Sans', Arial, sans-serif; max-width: 50em; margin: 2em auto\">\n"
        "<h1>Reliability Nirvana: the chapters</h1>\n<p>Each chapter as it ran: the notebook, its slides "
        "(arrow keys; S for the speaker view) and the slides as PDF. Nothing here loads anything from the "
        "internet.</p>\n<ul>\n" + rows + "\n</ul>\n</body></html>\n", encoding="utf-8")


def resolve(names: list[str] | None) -> list[str]:
    """The chapter file names meant by ``names`` (file names, stems or numbers such as ``01``;
    none: every chapter). Raises ExportError naming one that matches no chapter."""
    known = chapters()
    wanted = []
    for name in names or known:
        match = [chapter for chapter in known if chapter in (name, f"{name}.ipynb") or chapter.split("_")[0] == name]
        if len(match) != 1:
            raise ExportError(f"no chapter {name!r}: choose from {', '.join(known)} (or its number, e.g. 01)")
        wanted.append(match[0])
    return wanted


def export(names: list[str] | None = None, out: Path | None = None, *, progress: Progress = print) -> list[Exported]:
    """Export ``names`` (chapter file names or stems; default every chapter) into ``out`` (default
    :func:`export_dir`); returns what was written. The stack must be up (``./kit up``): the chapters
    drive it. Raises ExportError for an unknown chapter, a missing tool or a failing chapter."""
    wanted = resolve(names)
    out = (out or export_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    copy_libraries(out)
    done = [export_chapter(chapter, out, progress=progress) for chapter in wanted]
    _index(out, done)
    progress(f"export: {len(done)} chapters in {out}; open {out / 'index.html'}")
    return done


__all__ = ["export", "resolve", "export_chapter", "export_dir", "chapters", "run", "print_pdf", "copy_libraries",
           "Exported", "ExportError", "LIBRARIES", "TOOLS", "slide_count", "pdf_pages"]
