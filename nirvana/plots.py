"""Counters as pictures: cumulative counts since a mark, once or refreshed live.

``plot_counters`` draws one figure for a notebook cell (end the cell with ``plt.show()``).
``live_chart`` redraws the same picture every few seconds while presenting; it is an image
widget fed by one background thread that stops on its button or after its duration.
Landmarks ("stop notify", "restart") are data: take ``m = plots.Mark.now("stop notify")`` just
before the step and pass ``marks=[m, ...]``; each is a labelled vertical line on the plot.
"""

import io
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text

from . import graphite
from ._wait import Progress

Fetch = Callable[[list[str], float], Mapping[str, graphite.Series]]
LIVE_SECONDS = 120.0
LIVE_EVERY = 2.0
LINE_STYLES = ("-", "--", ":", "-.")
DPI = 150                  # pixels per inch of every PNG the kit draws (written into the PNG)
SMALLEST_PT = 12.0         # no text below this: 12 pt at 150 dpi = 25 px
FIGSIZE = (8.0, 3.4)       # inches: 1200x510 px, the height a slide shows unscaled (50vh at 1080)
STYLE = {
    "figure.dpi": DPI, "savefig.dpi": DPI, "figure.figsize": FIGSIZE,
    "font.size": 13.0, "axes.titlesize": 14.0, "axes.labelsize": 13.0,
    "xtick.labelsize": SMALLEST_PT, "ytick.labelsize": SMALLEST_PT,
    "legend.fontsize": SMALLEST_PT, "legend.title_fontsize": SMALLEST_PT,
    "lines.linewidth": 2.5, "axes.linewidth": 1.2,
}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = FIGSIZE, **options):
    """``plt.subplots`` with the kit's :data:`STYLE` (set in matplotlib's rcParams first: tick labels
    are made when the figure is drawn, after this returns). ``figsize`` in inches; returns
    ``(figure, axes)`` as ``plt.subplots`` does."""
    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=figsize, **options)


def smallest_text_pt(fig: Figure) -> float:
    """The smallest font size (points) of any visible text of ``fig`` once drawn: titles, labels,
    tick labels, legend entries, notes. The kit's figures keep it at or above :data:`SMALLEST_PT`."""
    fig.canvas.draw()
    sizes = [text.get_fontsize() for text in fig.findobj(Text) if text.get_visible() and text.get_text().strip()]
    return min(sizes, default=float("inf"))


@dataclass(frozen=True)
class Mark:
    """A landmark on a plot: a moment ``at`` (Unix time in seconds, the clock of
    ``graphite.mark()``) and a short ``label`` such as ``"kill orders"``."""

    at: float
    label: str

    def __post_init__(self) -> None:
        if isinstance(self.at, bool) or not isinstance(self.at, (int, float)) or not math.isfinite(self.at):
            raise ValueError(f"Mark.at={self.at!r} is not a time: use Mark.now(label) or a time.time() value")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"Mark.label={self.label!r} is empty: name the step, e.g. 'stop notify'")

    @classmethod
    def now(cls, label: str) -> "Mark":
        """A mark at this moment: take it just before the step it names."""
        return cls(time.time(), label)


def _marks(marks: Iterable[Mark]) -> list[Mark]:
    marks = list(marks)
    for one in marks:
        if not isinstance(one, Mark):
            raise TypeError(f"marks must be plots.Mark values, got {one!r}: use plots.Mark.now('restart')")
    return marks


def outside_note(mark: Mark) -> str:
    return f"note: mark {mark.label!r} is outside the plotted time, not drawn"


def missing_note(name: str) -> str:
    return f"note: no data yet for {name} (no service has counted it yet)"


def draw(ax: Axes, series: Mapping[str, graphite.Series], since: float, now: float,
         marks: Sequence[Mark] = ()) -> list[str]:
    """Draw each series' running total since the mark on ``ax``, and each of ``marks`` inside the
    plotted time as a labelled dotted vertical line; return the names with no data."""
    missing, highest = [], 0
    # a little room on the right, so a step in the newest whole bucket is seen, not hidden by the frame
    right = max(now - since, 1.0) * 1.06 + 0.5
    for name, one in series.items():
        if not one.exists:
            missing.append(name)
            continue
        xs, ys = one.cumulative(since, now)
        total = ys[-1] if ys else 0
        highest = max(highest, total)
        # services often count the same: later lines are thinner and dashed, so none hides another
        drawn = len(ax.get_lines())
        ax.step([0.0] + xs + [right], [0] + ys + [total], where="post", label=f"{name} ({total})",
                linewidth=max(3.0 - drawn, 1.2), linestyle=LINE_STYLES[drawn % len(LINE_STYLES)])
    ax.set_xlabel("seconds since the mark")
    ax.set_ylabel("events counted (cumulative)")
    ax.set_xlim(left=0, right=right)
    # room above the lines for the marks' labels (two rows) and the notes
    ax.set_ylim(bottom=0, top=max(highest, 1) * (1.5 if marks or missing else 1.15))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    for number, one in enumerate(sorted(_marks(marks), key=lambda m: m.at)):
        if not since <= one.at <= now:
            continue   # plot_counters says so; the live chart just leaves it out
        x = one.at - since
        ax.axvline(x, color="0.35", linestyle=":", linewidth=1.2, gid=f"mark:{one.label}")
        # labels alternate in height, so two close marks do not print over each other
        ax.text(x, 0.98 - 0.09 * (number % 2), f" {one.label}", transform=ax.get_xaxis_transform(),
                va="top", ha="left", fontsize=SMALLEST_PT, color="0.25", gid=f"mark:{one.label}")
    if missing:
        ax.text(0.98, 0.76, "\n".join(f"no data yet: {name}" for name in missing),
                transform=ax.transAxes, va="top", ha="right", fontsize=SMALLEST_PT, color="0.4")
    if len(missing) < len(series):
        ax.legend(loc="best")
    return missing


def _default_fetch(url: str | None) -> Fetch:
    return lambda names, since: graphite.fetch(names, since, url=url)


def plot_counters(
    names: Iterable[str],
    since: float,
    *,
    title: str | None = None,
    progress: Progress = print,
    url: str | None = None,
    fetch: Fetch | None = None,
    marks: Iterable[Mark] = (),
) -> Figure:
    """One figure: each counter's running total since the mark (``since``, Unix seconds), with
    ``marks`` as labelled vertical lines. Prints a note per missing counter and per mark outside
    the plotted time, and one when Graphite misses flushes of the window (``note: incomplete: ...``,
    :func:`nirvana.graphite.completeness`; the title then ends in "(incomplete)"); raises
    TypeError for a mark that is not a :class:`Mark`."""
    names, marks = list(names), _marks(marks)
    now = time.time()
    series = (fetch or _default_fetch(url))(names, since)
    fig, ax = subplots()
    for name in draw(ax, series, since, now, marks):
        progress(missing_note(name))
    for one in marks:
        if not since <= one.at <= now:
            progress(outside_note(one))
    incomplete = graphite.completeness(since, now, url=url) if fetch is None else None
    if incomplete:   # the totals drawn are short: say so under the plot and in its title
        progress(f"note: {incomplete}")
    ax.set_title((title or "counted since the mark") + (" (incomplete)" if incomplete else ""))
    fig.tight_layout()
    return fig


class LiveChart:
    """A chart that redraws itself every ``every`` seconds until stopped or ``seconds`` passed."""

    figsize: tuple[float, float] = FIGSIZE

    def __init__(
        self,
        names: Iterable[str],
        since: float,
        *,
        seconds: float = LIVE_SECONDS,
        every: float = LIVE_EVERY,
        title: str | None = None,
        url: str | None = None,
        fetch: Fetch | None = None,
        figsize: tuple[float, float] = FIGSIZE,
    ) -> None:
        self.names, self.since, self.seconds, self.every = list(names), since, seconds, every
        self.figsize = figsize   # inches at DPI: narrower beside a panel, so it is shown unscaled
        self.title = title or "live: counted since the mark"
        self._fetch = fetch or _default_fetch(url)
        self._stop = threading.Event()
        self.frames = 0
        # at its natural size (FIGSIZE at DPI), as a plot's PNG, not stretched to the panel's
        # width (a flex item): a slide caps its height (rise.css), a narrow window its width
        self.image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start", max_width="100%"))
        self.label = widgets.Label("starting")
        self.stop_button = widgets.Button(description="stop", icon="stop")
        self.stop_button.on_click(lambda _button: self.stop())
        self.widget = widgets.VBox([self.image, widgets.HBox([self.stop_button, self.label])])
        self._thread = threading.Thread(target=self._run, name="nirvana-live-chart", daemon=True)
        _live.add(self)
        self._thread.start()

    def figure(self) -> Figure:
        """Fetch and draw one frame (its own Figure: no pyplot state shared with the kernel)."""
        now = time.time()
        plt.rcParams.update(STYLE)   # as subplots() does (rcParams are read while drawing)
        fig = Figure(figsize=self.figsize, dpi=DPI)
        ax = fig.subplots()
        draw(ax, self._fetch(self.names, self.since), self.since, now)
        ax.set_title(self.title)
        fig.tight_layout()
        return fig

    def render(self) -> bytes:
        """One frame as PNG, ``figsize`` at DPI (by default FIGSIZE: 1200x510 px)."""
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.image.value = self.render()
                self.frames += 1
                self.label.value = f"refreshing every {self.every:g} s, until {self.seconds:g} s have passed"
            except Exception as error:   # shown beside the chart: a thread has no cell to raise into
                self.label.value = f"could not refresh: {error}"
            self._stop.wait(self.every)
        self.label.value = "stopped"
        self.stop_button.disabled = True

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop refreshing and wait for the thread to end."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


_live: "weakref.WeakSet[LiveChart]" = weakref.WeakSet()   # this kernel's charts, for stop_live_charts()


def stop_live_charts() -> int:
    """Stop every live chart of this kernel still refreshing (a chapter's teardown); how many."""
    running = [chart for chart in list(_live) if chart.running]
    for chart in running:
        chart.stop()
    return len(running)


def live_chart(names: Iterable[str], since: float, *, seconds: float = LIVE_SECONDS, **options) -> LiveChart:
    """A self-refreshing chart for presenting (display it; it stops after ``seconds``)."""
    return LiveChart(names, since, seconds=seconds, **options)


def plot_reports(reports: Mapping[str, object]) -> Figure:
    """The chaos proof's reports (run name -> :class:`nirvana.chaos.Report`) as bars per run and
    service: ids processed once and ids duplicated, the count on each bar."""
    fig, ax = subplots()
    labels = [f"{run}\n{row.service}" for run, report in reports.items() for row in report.rows]
    rows = [row for report in reports.values() for row in report.rows]
    xs = range(len(rows))
    for offset, (name, values) in zip((-0.2, 0.2), (("processed once", [r.processed_once for r in rows]),
                                                    ("duplicated", [r.duplicated for r in rows])), strict=True):
        ax.bar_label(ax.bar([x + offset for x in xs], values, 0.4, label=name))
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("ids")
    ax.set_title("every id accounted for, per run and service")
    ax.margins(y=0.4)   # room for the legend above the bars
    ax.legend(loc="upper center", ncols=2)
    fig.tight_layout()
    return fig


__all__ = ["subplots", "smallest_text_pt", "STYLE", "DPI", "SMALLEST_PT", "FIGSIZE", "plot_counters", "live_chart", "LiveChart", "stop_live_charts", "Mark", "draw", "missing_note", "outside_note", "plot_reports"]
