"""The chapters as a presenter sees them: JupyterLab and the RISE slideshow in a real browser.

Debian's ``chromium`` (``./kit setup`` installs it) driven by Playwright (``executable_path``: no
browser download), headless, a fresh profile per browser. JupyterLab is started the way
``./kit present`` starts it (:mod:`nirvana.present`: a copy of the chapters, the kit's settings),
on a free port with its copy under the test's temporary folder. The chapters reset and stop the
kit's services, so these tests run under the stack lock with the rest of the suite.

Screenshots for a human go to ``state/browser/``.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from nirvana import endpoints, graphite, paths, present, services

from conftest import IN_CI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHAPTERS = [path.name for path in sorted(paths.NOTEBOOKS.glob("*.ipynb"))]
WITH_WIDGETS = {"01_consume_produce.ipynb", "03_idempotency.ipynb"}
WITH_PLOTS = {"01_consume_produce.ipynb", "02_recovery.ipynb", "03_idempotency.ipynb"}
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")
RUN_TIMEOUT_MS = 90_000
# chapter 9 starts a RabbitMQ cluster of its own and kills its leaders: about 1.5 minutes
SLOW_CHAPTERS_MS = {"09_scale_out.ipynb": 240_000}
MIN_BODY_PX = 24          # body text at 1920x1080, read from the back of a room (issue 9)

playwright_api = pytest.importorskip("playwright.sync_api")


def screenshots() -> Path:
    folder = paths.state_dir() / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((endpoints.HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, amqp_url, etcd_endpoint, graphite_url):
    """JupyterLab as ``./kit present`` starts it, on a free port: (base URL, token)."""
    if not Path(CHROMIUM).exists():
        message = "chromium is missing: run ./kit setup (it installs Debian's chromium)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    root = tmp_path_factory.mktemp("present")
    present.prepare(root)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, **present.lab_environment(token, root / "settings")}
    log = open(root / "jupyterlab.log", "wb")
    process = subprocess.Popen(present.lab_command(root, endpoints.HOST, port, open_browser=False), env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://{endpoints.HOST}:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if requests.get(f"{base}/api", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, f"JupyterLab exited: {(root / 'jupyterlab.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.25)
        yield base, token, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()
        services.stop_all()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


class Recorder:
    """Every request a page makes, and its console errors."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))

    def leaving(self) -> list[str]:
        return sorted({url for url in self.urls if not url.startswith(LOCAL)})


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def open_chapter(context, base, token, chapter):
    """The chapter alone in a fresh JupyterLab workspace (JupyterLab otherwise restores the
    server-side workspace, which reopens every notebook an earlier page opened): (page, recorder)."""
    page = context.new_page()
    recorder = Recorder(page)
    workspace = f"test-{secrets.token_hex(6)}"
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/notebooks/{chapter}?reset&token={token}")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
    return page, recorder


def notebook(page):
    """The notebook panel on show: every locator of a test is scoped to it."""
    return page.locator(PANEL)


def menu(page, top: str, item: str) -> None:
    page.locator(f'.lm-MenuBar-itemLabel:text-is("{top}")').click()
    page.locator(f'.lm-Menu-itemLabel:text-is("{item}")').click()


RUNNING = f"Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-InputPrompt')).some(p => p.textContent.includes('*'))"
# the cells still queued or running: their prompt, first line of code and last output line
STUCK = f"""Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-CodeCell'))
    .filter(c => (c.querySelector('.jp-InputPrompt')?.textContent || '').includes('*'))
    .map(c => [(c.querySelector('.cm-line')?.textContent || '').slice(0, 80),
               (c.querySelector('.jp-OutputArea')?.innerText || '').trim().split('\\n').slice(-2).join(' | ')])"""
POLL_MS = 250   # polled on a timer: requestAnimationFrame (Playwright's default) may not fire on a starved machine


def run_all(page, chapter: str, timeout_ms: int = RUN_TIMEOUT_MS) -> float:
    """Clear the outputs, Run All, wait until no cell is queued or running and the teardown line
    shows (``timeout_ms``); returns the seconds it took. A run that does not end names the cells still running."""
    page.keyboard.press("Escape")
    menu(page, "Edit", "Clear Outputs of All Cells")
    started = time.monotonic()
    menu(page, "Run", "Run All Cells")
    page.wait_for_function(RUNNING, timeout=10_000, polling=POLL_MS)   # every cell queued: [*]
    try:
        page.wait_for_function(f"!({RUNNING})", timeout=timeout_ms, polling=POLL_MS)
    except playwright_api.TimeoutError:
        page.screenshot(path=str(screenshots() / f"stuck-{chapter.removesuffix('.ipynb')}.png"), full_page=True)
        kernel = page.locator(".jp-StatusBar-TextItem", has_text="|").all_inner_texts()
        pytest.fail(f"{chapter}: Run All not done after {timeout_ms / 1000:g} s; kernel {kernel}; "
                    f"cells still queued or running: {page.evaluate(STUCK)}")
    notebook(page).locator(".jp-OutputArea-output", has_text="svc processes left:").wait_for(state="attached", timeout=10_000)
    return time.monotonic() - started


def save(page) -> None:
    """Save the notebook on show (JupyterLab's copy under the test's folder, never the checkout)."""
    page.keyboard.press("Control+s")
    page.locator(".jp-mod-dirty").first.wait_for(state="detached", timeout=10_000)


def shut_down_kernel(base: str, token: str, chapter: str) -> None:
    """End the chapter's kernel, as nbval does after each notebook: a kernel left running keeps its
    threads and sockets beside the next chapter's (and every new page connects to it)."""
    headers = {"Authorization": f"token {token}"}
    for session in requests.get(f"{base}/api/sessions", headers=headers, timeout=10).json():
        if session["path"].endswith(f"notebooks/{chapter}"):
            requests.delete(f"{base}/api/sessions/{session['id']}", headers=headers, timeout=30).raise_for_status()


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "notebooks", "assets"], cwd=paths.ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("chapter", [pytest.param(c, marks=pytest.mark.timeout(360)) if c in SLOW_CHAPTERS_MS else c
                                     for c in CHAPTERS])
def test_chapter_runs_all_in_the_browser(lab, browser, chapter):
    # Given JupyterLab as the presenter starts it, when a chapter is Run All in the browser
    base, token, _root = lab
    before = git_status()
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        page, recorder = open_chapter(context, base, token, chapter)
        seconds = run_all(page, chapter, SLOW_CHAPTERS_MS.get(chapter, RUN_TIMEOUT_MS))
        print(f"{chapter}: Run All {seconds:.1f} s")
        # I expect no error output, widgets as widgets, plots as images, and the teardown line
        panel = notebook(page)
        outputs = panel.locator(".jp-Notebook .jp-OutputArea-output")
        assert panel.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0, \
            panel.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        assert outputs.filter(has_text="Traceback").count() == 0
        assert outputs.filter(has_text="VBox(children=").count() == 0
        if chapter in WITH_WIDGETS:
            assert panel.locator(".jp-OutputArea-output .jupyter-widgets button").count() >= 3
        if chapter in WITH_PLOTS:
            assert panel.locator(".jp-OutputArea-output[data-mime-type='image/png'] img").count() >= 1
        assert outputs.filter(has_text="svc processes left: 0").count() == 1
        page.screenshot(path=str(screenshots() / f"{chapter.removesuffix('.ipynb')}.png"))
        assert recorder.leaving() == []
        save(page)   # the live outputs, for the slide test (test_no_slide_overflows_at_1280x720)
    finally:
        context.close()   # a failed run's page must not stay open (its autosave wrote half-run outputs)
        shut_down_kernel(base, token, chapter)
    # and the checkout's notebooks untouched (JupyterLab served a copy)
    assert git_status() == before


def test_publish_click_in_the_browser_raises_the_counter_in_graphite(lab, browser):
    # Given chapter 1 run in the browser, its services started again from the panel's buttons
    base, token, _root = lab
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page, recorder = open_chapter(context, base, token, "01_consume_produce.ipynb")
    run_all(page, "01_consume_produce.ipynb")
    chapter = notebook(page)
    panel = chapter.locator(".jp-OutputArea-output .jupyter-widgets", has_text="dedup through etcd").first
    for row in ("orders", "notify"):
        panel.locator(".widget-hbox", has_text=row).get_by_role("button", name="start").click()
    chapter.locator(".widget-html", has_text="running").nth(1).wait_for(timeout=20_000)
    since = graphite.mark()
    # When the presenter clicks publish
    # (by text: a button's accessible name also carries its Font Awesome icon's glyph)
    chapter.locator("button", has_text=re.compile(r"^\s*publish\s*$")).first.click()
    # I expect both counters to rise in Graphite, and the panel to say so once
    assert graphite.wait_for("orders_new_order_ok", 1, since, timeout=15, progress=print) >= 1
    assert graphite.wait_for("notify_new_order_ok", 1, since, timeout=15, progress=print) >= 1
    chapter.locator(".widget-output", has_text="1 confirmed").first.wait_for(timeout=5_000)
    assert recorder.leaving() == []
    services.stop_all()
    context.close()


def test_slideshow_shows_live_panels_styled_and_offline(lab, browser):
    # Given chapter 1 run and saved, when it is opened as a RISE slideshow
    base, token, _root = lab
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page, recorder = open_chapter(context, base, token, "01_consume_produce.ipynb")
    run_all(page, "01_consume_produce.ipynb")
    save(page)
    slides = context.new_page()
    rise = Recorder(slides)
    slides.goto(f"{base}/rise/notebooks/01_consume_produce.ipynb?token={token}")
    slides.locator(".reveal .slides section").first.wait_for(timeout=60_000)
    # I expect the panels as widgets (buttons), never their text
    slides.locator(".reveal .jupyter-widgets button").first.wait_for(state="attached", timeout=30_000)
    assert slides.locator(".reveal .jupyter-widgets button").count() >= 8
    assert slides.get_by_text("VBox(children=").count() == 0
    # body text at least 24 px at 1920x1080
    sizes = slides.evaluate("""Array.from(document.querySelectorAll('.reveal .jp-RenderedMarkdown p'))
        .map(p => parseFloat(getComputedStyle(p).fontSize))""")
    assert sizes and min(sizes) >= MIN_BODY_PX, sizes
    # the live panel's slide, for a human to look at
    slides.locator(".reveal section", has=slides.locator(".jupyter-widgets button")).first.evaluate("s => 0")
    for _ in range(3):
        slides.keyboard.press("PageDown")
        time.sleep(0.4)
    slides.screenshot(path=str(screenshots() / "slide-live-panel.png"))
    assert rise.leaving() == [] and recorder.leaving() == [], rise.leaving() + recorder.leaving()
    context.close()


SLIDE_BOX = """() => {
    const all = Array.from(document.querySelectorAll('.reveal .slides section:not(.stack)'));
    const s = document.querySelector('.reveal .slides section.present:not(.stack)');
    const cells = Array.from(s.querySelectorAll('.jp-Cell')).filter(c => c.offsetParent);
    const boxes = cells.map(c => c.getBoundingClientRect());
    return {index: all.indexOf(s), bottom: Math.max(0, ...boxes.map(b => b.bottom)),
            right: Math.max(0, ...boxes.map(b => b.right)), height: innerHeight, width: innerWidth};
}"""


def test_no_slide_overflows_at_1280x720(lab, browser):
    # Given every chapter as slides on a 1280x720 laptop, I expect every slide's cells inside the window
    base, token, _root = lab
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    too_big, seen = [], 0
    for chapter in CHAPTERS:
        slides = context.new_page()
        slides.goto(f"{base}/rise/notebooks/{chapter}?token={token}")
        slides.locator(".reveal .slides section").first.wait_for(timeout=60_000)
        slides.wait_for_load_state("networkidle")
        last = -1
        for _ in range(80):   # a chapter has fewer slides; PageDown on the last one stays there
            box = slides.evaluate(SLIDE_BOX)
            if box["index"] == last:
                break
            seen += 1
            if box["bottom"] > box["height"] or box["right"] > box["width"]:
                too_big.append((chapter, box))
                print(f"overflow: {chapter} slide {box['index']}: {box}")
                slides.screenshot(path=str(screenshots() / f"overflow-{chapter.removesuffix('.ipynb')}-{box['index']}.png"))
            last = box["index"]
            slides.keyboard.press("PageDown")
            slides.wait_for_timeout(300)
        slides.close()
    context.close()
    assert seen >= 4 * len(CHAPTERS)
    assert too_big == []


def test_graphite_ui_loads_its_scripts(browser, graphite_url):
    # Given the Graphite UI chapter 00 points to, I expect its scripts served and Ext defined
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    statuses = {}
    page.on("response", lambda response: statuses.__setitem__(response.url.split("?")[0], response.status))
    page.goto(f"{graphite_url}/?target=stats_counts.orders_new_order_ok&from=-15min")
    page.wait_for_load_state("networkidle")
    scripts = {url: status for url, status in statuses.items() if "/static/" in url}
    assert scripts and all(status in (200, 304) for status in scripts.values()), scripts
    assert f"{graphite_url}/static/js/ext/ext-all.js" in scripts
    assert any(frame.evaluate("typeof Ext") == "object" for frame in page.frames)
    page.screenshot(path=str(screenshots() / "graphite-ui.png"))
    context.close()
