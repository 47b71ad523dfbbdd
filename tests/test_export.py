"""``./kit export``: chapter 1 run against the real stack and exported, then its page, its slides
and their PDF opened from disk in chromium, where every http(s) request is refused and recorded.

The handout must open on a machine with nothing installed and no network: no script, style, font
or picture may come from outside the export (links a reader clicks, such as further reading, may
point outside). Pictures of what was checked go to ``state/browser/export-*.png``.
"""

import re
import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader

from conftest import IN_CI
from nirvana import export, paths, services

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHAPTER = "01_consume_produce.ipynb"
playwright_api = pytest.importorskip("playwright.sync_api")
# a resource the page loads by itself: <script src>, <link href> (styles), <img src>, CSS url(...),
# and a script, style or font named in a script (require([...]), import ... from '...')
LOADED = re.compile(r"""<(?:script|img|iframe|source)\b[^>]*\bsrc=["'](https?:)?//|<link\b[^>]*\bhref=["'](https?:)?//|"""
                    r"""url\(\s*["']?(https?:)?//|@import\s+["']?(https?:)?//|"""
                    r"""["'](?:https?:)?//[^"'\s]+\.(?:m?js|css|woff2?|ttf)(?:[?#][^"']*)?["']""", re.I)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, amqp_url, etcd_endpoint, graphite_url):
    """Chapter 1 exported into a folder of its own: (folder, what was written)."""
    if not Path(CHROMIUM).exists():
        message = "chromium is missing: run ./kit setup (it installs Debian's chromium)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    if not (export.TOOLS / "reveal.js").exists():
        message = "the export's scripts are missing under .tools/export: run ./kit setup"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    out = tmp_path_factory.mktemp("export")
    try:
        done = export.export(["01"], out)
    finally:
        services.stop_all()
    return out, done[0]


def test_the_export_holds_the_page_the_slides_and_a_pdf_with_pages(exported):
    # Given chapter 1 exported from a real run, I expect its three files, the run's outputs and
    # the widgets' saved state in them, and a PDF of more than one page
    out, one = exported
    page, slides, pdf = (out / one.page).read_text(), (out / one.slides).read_text(), (out / one.pdf).read_bytes()
    for text in (page, slides):
        assert "svc processes left: 0" in text
        assert "application/vnd.jupyter.widget-state+json" in text and "application/vnd.jupyter.widget-view+json" in text
        assert "data:image/png;base64," in text
    assert pdf.startswith(b"%PDF-")
    assert (out / "index.html").read_text().count(".slides.pdf") == 1


def slides_in_deck(browser, deck: Path) -> int:
    """The slides of the deck ``deck`` as reveal.js counts them (its sections holding no other)."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        page.goto(deck.resolve().as_uri())
        page.wait_for_function("document.body.dataset.deckReady === '1'", timeout=30_000)
        return page.evaluate("document.querySelectorAll('.reveal .slides section:not(.stack)').length")
    finally:
        page.close()


def test_the_pdf_has_one_page_per_slide_each_slide_whole(exported):
    # Given chapter 1's slides printed (reveal.js ?print-pdf in headless chromium), some of them
    # taller than 720 px as laid out (a panel, a long output)
    out, one = exported
    pages = len(PdfReader(out / one.pdf).pages)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            slides = slides_in_deck(browser, out / one.slides)
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto((out / one.slides).resolve().as_uri() + "?print-pdf")
            page.wait_for_function(export.PDF_READY, timeout=60_000)
            # every slide drawn inside its page: its height on the page at most the deck's 720 px
            heights = page.evaluate("""Array.from(document.querySelectorAll('.reveal .pdf-page > section'))
                .map(s => Math.round(s.getBoundingClientRect().height))""")
        finally:
            browser.close()
    # I expect exactly one page per slide: none spread over two pages, none repeated, no blank page
    assert slides >= 10, slides
    assert pages == slides, f"{pages} PDF pages for {slides} slides"
    assert export.slide_count((out / one.slides).read_text()) == slides   # the count the export checks
    assert len(heights) == slides and max(heights) <= 720, heights


def test_nothing_in_the_export_names_a_resource_outside_it(exported):
    out, _ = exported
    outside = [(str(path.relative_to(out)), match.group(0)[:80]) for path in out.rglob("*.html")
               for match in LOADED.finditer(path.read_text(errors="replace"))]
    assert outside == []


# every slide of the deck on show in turn (its URL: #/h/v), its bottom on a 1280x720 screen
SLIDE_BOTTOMS = """async () => {
    const rows = [];
    const tops = Array.from(document.querySelectorAll('.reveal .slides > section'));
    for (const [h, top] of tops.entries()) {
        const slides = top.classList.contains('stack') ? Array.from(top.querySelectorAll(':scope > section')) : [top];
        for (const [v, slide] of slides.entries()) {
            location.hash = `#/${h}/${v}`;
            await new Promise(done => setTimeout(done, 150));
            rows.push([`${h}/${v}`, slide.classList.contains('present'), Math.round(slide.getBoundingClientRect().bottom)]);
        }
    }
    return rows;
}"""


def test_every_slide_of_the_deck_fits_the_screen(exported):
    # Given chapter 1's deck opened on a 1280x720 screen, its widgets drawn, I expect every slide
    # whole on the screen (a slide taller than 720 px zoomed to fit, as on its PDF page)
    out, one = exported
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto((out / one.slides).resolve().as_uri())
            page.wait_for_function("document.body.dataset.deckReady === '1'", timeout=30_000)
            page.wait_for_function(export.WIDGETS_DRAWN, timeout=30_000)
            rows = page.evaluate(SLIDE_BOTTOMS)
        finally:
            browser.close()
    assert len(rows) >= 10 and all(present for _, present, _ in rows), rows
    assert [(slide, bottom) for slide, _, bottom in rows if bottom > 720] == []


@pytest.mark.parametrize("which", ["page", "slides"])
def test_the_export_opens_offline_in_a_browser_with_its_widgets(exported, which):
    # Given the page or the slides opened from disk, every http(s) request refused
    out, one = exported
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            left, errors, missing = [], [], []
            page.route("**/*", lambda route: (left.append(route.request.url), route.abort())
                       if route.request.url.startswith(("http://", "https://")) else route.continue_())
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: request.url.startswith("file:") and missing.append(request.url))
            page.goto((out / getattr(one, which)).resolve().as_uri())
            if which == "slides":
                page.wait_for_function("document.body.dataset.deckReady === '1'", timeout=30_000)
            page.wait_for_function(export.WIDGETS_DRAWN, timeout=30_000)
            page.wait_for_load_state("networkidle")
            # I expect the panels drawn from their saved state (buttons), nothing asked of the
            # internet, nothing missing, a clean console
            assert page.locator(".jupyter-widgets button").count() >= 6
            assert left == [] and missing == [], left + missing
            assert errors == []
            folder = paths.state_dir() / "browser"
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"export-{which}.png"))
        finally:
            browser.close()


def test_an_unknown_chapter_is_refused_in_one_line_with_exit_status_2():
    # Given `./kit export 99` (no such chapter), I expect one line naming the chapters, exit 2, nothing run
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "nirvana", "export", "99", "--out", "/nonexistent/export"],
                          capture_output=True, text=True, timeout=60, cwd=paths.ROOT)
    assert done.returncode == 2
    assert "no chapter '99': choose from 00_setup.ipynb" in done.stderr
    assert done.stdout == ""
