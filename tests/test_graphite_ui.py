"""Graphite as the talk shows it, against the real graphite-web, carbon and statsd of the stack:
counts summed when a graph has fewer points than seconds, the last minutes when a graph names no
time, the kit's dashboard saved with the kit, and made-up services' metrics pruned from the tree."""

import json
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
import statsd

from conftest import IN_CI, native_only
from nirvana import endpoints, graphite, paths, prune
from nirvana._wait import poll
from nirvana.stack.carbon import whisper_dir

DASHBOARD = paths.ASSETS / "graphite" / "dashboard.json"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def render(graphite_url, **params):
    answer = graphite.post_render(graphite_url, [("format", "json"), *((k, str(v)) for k, v in params.items())])
    answer.raise_for_status()
    return answer.json()


def test_the_kits_dashboard_is_saved_in_graphite_web(graphite_url):
    # Given graphite-web started by the kit, I expect its dashboard "nirvana" as assets/graphite/dashboard.json
    # says, every count in it consolidated by sum, the last 15 minutes, refreshing
    expected = json.loads(DASHBOARD.read_text())["state"]
    state = requests.get(f"{graphite_url}/dashboard/load/nirvana", timeout=10).json()["state"]
    assert state == expected
    targets = [target for graph in state["graphs"] for target in graph[1]["target"]]
    assert len(targets) >= 5
    assert all("consolidateBy(" in target and ",'sum')" in target for target in targets if "stats_counts." in target)
    assert state["defaultGraphParams"]["from"] == "-15minutes" and state["refreshConfig"]["enabled"]


def test_a_count_is_summed_when_a_graph_has_fewer_points_than_seconds(graphite_url):
    native_only("carbon")
    # Given a made-up counter that counted 1 every third second for two minutes (40 events),
    # written to carbon as statsd writes it (stats_counts.<name>, one point a second)
    service = f"t{uuid.uuid4().hex[:6]}_orders"
    name = f"stats_counts.{service}_new_order_ok"
    start = (int(time.time()) - 130) // 10 * 10   # graphite-web aligns consolidated points to their width
    lines = "".join(f"{name} {1 if i % 3 == 0 else 0} {start + i}\n" for i in range(120))
    try:
        with socket.create_connection((endpoints.HOST, endpoints.CARBON_PORT), timeout=5) as sock:
            sock.sendall(lines.encode())

        def points(**options):
            series = render(graphite_url, target=name, **{"from": start - 1, "until": start + 119, **options})
            return [value for value, _ in series[0]["datapoints"]] if series else []

        poll(lambda: sum(v or 0 for v in points()), lambda total: total == 40, what=f"40 events of {name} readable",
             timeout=20, progress=print)
        # When a graph has 12 points for its 120 seconds (as a UI graph narrower than its seconds)
        consolidated = points(maxDataPoints=12)
        # I expect each point the events of its 10 seconds (3 or 4), summed, never their average
        # (0.3 or 0.4); graphite-web drops the first 9 seconds to align the points: 36 or 37 of 40
        values = [v for v in consolidated if v]   # (a point past the last second is 0)
        assert len(consolidated) <= 12 and len(values) >= 10, consolidated
        assert set(values) <= {3.0, 4.0} and sum(values) >= 36, consolidated
    finally:
        prune.prune([service])


def test_a_graph_without_a_time_shows_the_last_minutes(graphite_url):
    # Given a graph that names no time (the UI's composer, a URL typed by hand), of statsd's own
    # counters (on a stack just started, none are in Graphite until carbon writes statsd's first flush)
    series = poll(lambda: render(graphite_url, target="stats_counts.statsd.*"),
                  lambda found: any(one["datapoints"] for one in found),
                  what="statsd's own counters in Graphite (stats_counts.statsd.*)", timeout=60, progress=print)
    first = min(stamp for one in series for _, stamp in one["datapoints"])
    # I expect the last 15 minutes, not graphite-web's 24 hours
    assert time.time() - 15 * 60 - 5 <= first <= time.time() - 14 * 60, first


def test_made_up_services_leave_nothing_in_the_tree_once_pruned(graphite_url):
    native_only("carbon", "statsd")
    # Given a made-up service that counted once through statsd, its counter in Graphite's tree
    service = f"t{uuid.uuid4().hex[:6]}_orders"
    client = statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT)
    client.incr(f"{service}_new_order_ok")
    client.timing(f"{service}_new_order_ms", 3)
    counts = whisper_dir() / "stats_counts" / f"{service}_new_order_ok.wsp"
    poll(counts.exists, bool, what=f"{counts} written", timeout=20, progress=print)
    # When it is pruned
    removed = prune.prune([service])
    # I expect statsd to have forgotten it and its files gone for good (statsd sends a counter it
    # knows every second, 0 when idle: without forgetting, the file came back within a second)
    assert removed >= 3   # stats_counts/<name>, stats/<name>, stats/timers/<name>/
    assert not any(name.startswith(service) for kind in prune.KINDS for name in prune.statsd_names(kind))
    time.sleep(2.5)
    leftover = [str(path) for path in whisper_dir().rglob(f"{service}*")]
    assert leftover == []
    tree = requests.get(f"{graphite_url}/metrics/find", params={"query": "stats_counts.*"}, timeout=10).json()
    assert not any(node["text"].startswith(service) for node in tree)


def test_the_dashboard_draws_in_a_browser(graphite_url):
    # Given the kit's dashboard opened in chromium, I expect every graph drawn, a clean console
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        message = "chromium is missing: run ./kit setup"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors, renders = [], []
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("response", lambda response: "/render" in response.url and renders.append(response.status))
            page.goto(f"{graphite_url}/dashboard/nirvana")
            folder = paths.state_dir() / "browser"
            folder.mkdir(parents=True, exist_ok=True)
            expected = len(json.loads(DASHBOARD.read_text())["state"]["graphs"])
            drawn = """Array.from(document.querySelectorAll('img'))
                .filter(i => i.src.includes('/render') && i.complete && i.naturalWidth > 0).length"""
            # (polled from here: the page's Ext 3 breaks Playwright's wait_for_function, "reject is not a function")
            poll(lambda: page.evaluate(drawn), lambda count: count >= expected, what=f"{expected} graphs drawn",
                 timeout=30, progress=print)
            page.screenshot(path=str(folder / "graphite-dashboard.png"))
            assert renders and set(renders) <= {200}, renders
            assert errors == []
        finally:
            browser.close()
