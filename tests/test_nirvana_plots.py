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


def drawn_marks(ax):
    """(x, label) of every mark drawn on ``ax``: the vertical lines and their texts share a gid."""
    lines = {line.get_gid(): line.get_xdata()[0] for line in ax.get_lines() if (line.get_gid() or "").startswith("mark:")}
    texts = {text.get_gid(): text.get_text().strip() for text in ax.texts if (text.get_gid() or "").startswith("mark:")}
    assert lines.keys() == texts.keys()
    return sorted((round(x, 3), texts[gid]) for gid, x in lines.items())


def test_marks_are_labelled_vertical_lines_at_their_time_since_the_mark():
    # Given chapter 2's landmarks, taken as data at 2 s and 5 s after the mark
    since = time.time() - 10
    marks = [plots.Mark(since + 5, "restart both"), plots.Mark(since + 2, "stop notify")]
    lines = []
    fig = plots.plot_counters(["orders_new_order_ok"], since, progress=lines.append,
                              fetch=canned({"orders_new_order_ok": [0, 1, 0, 0]}), marks=marks)
    # I expect a labelled line at each, and the counter's own line untouched
    ax = fig.axes[0]
    assert drawn_marks(ax) == [(2.0, "stop notify"), (5.0, "restart both")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["orders_new_order_ok (1)"]
    assert lines == []


def test_a_mark_outside_the_plotted_time_is_a_note_and_a_bad_mark_is_refused():
    since = time.time() - 10
    lines = []
    early = plots.Mark(since - 60, "before the mark")
    fig = plots.plot_counters(["x"], since, progress=lines.append, fetch=canned({"x": [1]}),
                              marks=[early, plots.Mark.now("now")])
    assert [label for _, label in drawn_marks(fig.axes[0])] == ["now"]
    assert lines == [plots.outside_note(early)]
    with pytest.raises(TypeError, match="plots.Mark"):
        plots.plot_counters(["x"], since, fetch=canned({}), marks=[since + 1])
    with pytest.raises(ValueError, match="empty"):
        plots.Mark(since, " ")
    with pytest.raises(ValueError, match="not a time"):
        plots.Mark(float("nan"), "x")


def test_a_live_chart_refreshes_then_stops_by_itself_after_its_duration():
    # (2 s of 0.1 s refreshes: a loaded CI machine can take most of a second to draw one frame)
    chart = plots.live_chart(["x"], time.time() - 5, seconds=2.0, every=0.1, fetch=canned({"x": [1, 1]}))
    chart._thread.join(20)
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


def kit_figures():
    """One figure of each kind the chapters show, drawn from canned data: {name: figure}."""
    from dataclasses import replace
    from types import SimpleNamespace

    from nirvana import chaos, checker, cost, designs, scale

    since = time.time() - 10
    marks = [plots.Mark(since + 2, "stop notify"), plots.Mark(since + 5, "start both")]
    orders = checker.Row("orders", 3000, 3000, 0, 0, 0, 0, 0)
    live = plots.LiveChart.__new__(plots.LiveChart)   # a frame of it, without its thread and widgets
    live.names, live.since, live.title = ["orders_new_order_ok"], since, "live: counted since the mark"
    live._fetch = canned({"orders_new_order_ok": [1, 0, 1]})
    return {
        "plot_counters": plots.plot_counters(["orders_new_order_ok", "notify_new_order_ok"], since, marks=marks,
                                             progress=lambda _line: None,
                                             fetch=canned({"orders_new_order_ok": [1, 0, 2, 1]})),
        "live_chart": live.figure(),
        "cost.plot": cost.plot(cost.Cost(2000, {n: [20856.0, 7474.0] for n in cost.CONTENDERS},
                                         {n: [1.2, 0.9] for n in cost.CONTENDERS[1:]},
                                         {n: [7.3] for n in cost.CONTENDERS[1:]},
                                         {n: {step: 1.0 for step in cost.STEPS} for n in cost.CONTENDERS[1:]}, 0.94)),
        "scale.plot_throughput": scale.plot_throughput(scale.Throughput({1: 900.0, 2: 1700.0, 4: 3100.0}, 2000, True)),
        "designs.plot_double_effects": designs.plot_double_effects(
            [designs.Outcome(d, s, 40, 20, 40 if d == "talk" else 20, 20 if d == "talk" else 0)
             for d in designs.DESIGNS for s in ("two replicas", "kill before the flush")]),
        "chaos.plot_reports": chaos.plot_reports({
            "claims": SimpleNamespace(rows=(orders, replace(orders, service="notify"))),
            "dedup off": SimpleNamespace(rows=(replace(orders, processed_once=2700, duplicated=300),))}),
    }


def test_every_kit_figure_is_readable_on_a_slide(tmp_path):
    # Given each figure a chapter shows, drawn by the kit (the live chart's frame too),
    # I expect no text below SMALLEST_PT at DPI: 25 px in the PNG, which a 1920x1080 slide shows
    # at its natural size (height capped at 50vh = 540 px by rise.css), so >= 24 px on the screen
    assert plots.SMALLEST_PT * plots.DPI / 72 >= 24
    for name, fig in kit_figures().items():
        assert plots.smallest_text_pt(fig) >= plots.SMALLEST_PT, name
        assert fig.dpi == plots.DPI, name
        fig.savefig(tmp_path / f"{name}.png", bbox_inches="tight")   # as the notebook shows it
        assert fig.get_size_inches()[1] * plots.DPI <= 540, name
