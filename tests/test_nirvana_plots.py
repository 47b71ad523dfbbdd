"""nirvana.plots: a cumulative figure per mark, and a live chart whose thread always ends."""

import threading
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from nirvana._wait import poll  # noqa: E402
from nirvana import graphite, plots  # noqa: E402


def canned(values_by_name):
    """A stand-in for graphite.fetch: 1 s buckets ending before now, None for a missing name."""

    def fetch(names, since):
        start = int(since)
        result = {}
        for name in names:
            values = values_by_name.get(name)
            if values is None:
                result[name] = graphite.Series(name, exists=False)
            else:
                result[name] = graphite.Series(name, tuple((start + i, v) for i, v in enumerate(values)))
        return result

    return fetch


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_counters_draws_each_running_total_and_notes_a_missing_counter():
    since = time.time() - 10
    lines = []
    fig = plots.plot_counters(["orders_new_order_ok", "notify_new_order_ok"], since,
                              progress=lines.append, fetch=canned({"orders_new_order_ok": [0, 1, 0, 2]}))
    ax = fig.axes[0]
    # one line, ending at the total 3, labelled with it
    [line] = ax.get_lines()
    assert list(line.get_ydata())[-1] == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["orders_new_order_ok (3)"]
    # the missing one is a note, printed and on the plot, not an exception
    assert lines == [plots.missing_note("notify_new_order_ok")]
    assert "no data yet: notify_new_order_ok" in [t.get_text() for t in ax.texts]


def test_plot_counters_with_no_data_at_all_is_still_a_figure():
    lines = []
    fig = plots.plot_counters(["a", "b"], time.time(), progress=lines.append, fetch=canned({}))
    assert fig.axes[0].get_lines() == [] and fig.axes[0].get_legend() is None
    assert len(lines) == 2


def test_a_live_chart_refreshes_then_stops_by_itself_after_its_duration():
    chart = plots.live_chart(["x"], time.time() - 5, seconds=0.6, every=0.1, fetch=canned({"x": [1, 1]}))
    chart._thread.join(5)
    assert not chart.running
    assert chart.frames >= 2
    assert bytes(chart.image.value).startswith(b"\x89PNG")
    assert chart.label.value == "stopped" and chart.stop_button.disabled


def test_the_stop_button_ends_a_live_chart_at_once_and_leaves_no_thread():
    before = threading.active_count()
    chart = plots.live_chart(["x"], time.time(), seconds=60, every=0.2, fetch=canned({}))
    chart.stop_button.click()
    chart._thread.join(3)
    assert not chart.running
    assert threading.active_count() == before


def test_a_failing_fetch_is_shown_beside_the_chart_and_does_not_kill_it():
    def broken(names, since):
        raise graphite.GraphiteUnavailable("graphite-web is not answering")

    chart = plots.live_chart(["x"], time.time(), seconds=5, every=0.05, fetch=broken)
    poll(lambda: chart.label.value, lambda text: text.startswith("could not refresh"),
         what="the chart to show the error", timeout=3, progress=lambda _: None)
    assert chart.running and chart.label.value.startswith("could not refresh: graphite-web")
    chart.stop()
    assert not chart.running


def test_a_live_chart_draws_from_the_real_graphite(graphite_url):
    chart = plots.live_chart(["nirvana_never_counted"], time.time() - 5, seconds=0.5, every=0.2, url=graphite_url)
    chart._thread.join(5)
    assert chart.frames >= 1 and chart.label.value == "stopped"
    assert bytes(chart.image.value).startswith(b"\x89PNG")
