"""Panels for presenting: publish events, start and stop services, with buttons.

Every button has the same call in code, so a notebook run by CI does exactly what the presenter
clicks: ``panel.publish_button.click()`` is ``panel.publish()``. What a panel says goes to its
``output`` (an ``ipywidgets.Output``), never to a bare print; its state (``last_result``,
``last_error``) is what tests assert on, because ``Button.click()`` swallows exceptions.
"""

import threading
import uuid
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ipywidgets as widgets

from svc.event import EVENT_TYPES   # the event types svc knows: the panel offers those
from svc.publisher import DEFAULT_ROUTING_KEY

from . import graphite, plots, rabbit, services   # plots: matplotlib, loaded with the panels
from .publisher import Publisher
from .settings import current

TALK_ID = "123"
TALK_ROUTING_KEY = DEFAULT_ROUTING_KEY   # the talk's routing key, svc's default
MAX_COUNT = 100
REFRESH_EVERY = 1.0         # seconds between status-light refreshes
REFRESH_FOR = 2 * 3600.0    # the refresher stops by itself after a talk's length

PublisherFactory = Callable[[str, str], AbstractContextManager]


def _svc_publisher(amqp_url: str, exchange: str) -> AbstractContextManager:
    return Publisher(amqp_url, exchange=exchange)


def _in_cell() -> bool:
    """True while a cell's code runs in a kernel (its current request is an ``execute_request``),
    False for a click in the browser (a ``comm_msg``) and outside a kernel.

    A cell that calls ``publish_button.click()`` and prints the result would otherwise show the
    same line twice on one slide: once in the panel, once under the cell.
    """
    from ipykernel.kernelbase import Kernel

    if not Kernel.initialized():
        return False
    parent = Kernel.instance().get_parent() or {}
    return parent.get("header", {}).get("msg_type") == "execute_request"


def fresh_id() -> str:
    """A new event id, short enough to read on a slide."""
    return uuid.uuid4().hex[:8]


LOG_LINES = 3   # lines a panel shows: the latest; a slide keeps its height however often it is clicked


class _Panel:
    """What the panels share: an Output that shows their latest :data:`LOG_LINES` lines and errors.

    The Output has a fixed height (``notebooks/rise.css`` sizes it on slides: class
    ``nirvana-log``), so clicking a button never pushes a slide's content off the screen; older
    lines are dropped, not scrolled (what a click did is also in ``last_result``/``last_error``).
    """

    def __init__(self) -> None:
        self.output = widgets.Output(layout=widgets.Layout(height=f"{LOG_LINES * 1.4 + 0.8:g}em", overflow="hidden"))
        self.output.add_class("nirvana-log")
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._lines_lock = threading.Lock()
        self.last_error: str | None = None

    def say(self, line: str) -> None:
        """One line into the panel's output, dropping the oldest beyond :data:`LOG_LINES`.

        Thread-safe (a click's handler and the lights' refresher both say things): the Output's
        whole content is replaced at once, no capture context involved.
        """
        with self._lines_lock:
            self.lines.extend(line.splitlines() or [""])
            text = "".join(f"{one}\n" for one in self.lines)
            self.output.outputs = ({"output_type": "stream", "name": "stdout", "text": text},)

    def _attempt(self, action: Callable[[], Any]) -> Any:
        """Run an action, show its error in the output instead of raising (a click has no cell)."""
        self.last_error = None
        try:
            return action()
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            self.say(f"error: {self.last_error}")
            return None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


@dataclass(frozen=True)
class Batch:
    """What one click publishes: these events (each id once, or one id ``count`` times)."""

    event_type: str
    ids: tuple[str, ...]
    routing_key: str

    def describe(self) -> str:
        ids = sorted(set(self.ids))
        shown = ids[0] if len(ids) == 1 else f"{len(ids)} fresh ids"
        return f"{len(self.ids)} x {self.event_type} id {shown} (routing key {self.routing_key})"


@dataclass(frozen=True)
class Published:
    """The outcome of one click: the batch and what the broker confirmed."""

    batch: Batch
    confirmed: int
    unroutable: int = 0
    nacked: int = 0

    @property
    def ok(self) -> bool:
        return self.confirmed == len(self.batch.ids) and not self.unroutable and not self.nacked

    def __str__(self) -> str:
        line = f"published {self.batch.describe()}: {self.confirmed} confirmed"
        if self.unroutable:
            line += f", {self.unroutable} UNROUTABLE (no queue is bound for routing key {self.batch.routing_key})"
        if self.nacked:
            line += f", {self.nacked} REFUSED by the broker"
        return line


class PublishPanel(_Panel):
    """Event type, id (the talk's fixed "123" or fresh), routing key, count; publish / again."""

    def __init__(
        self,
        *,
        amqp_url: str | None = None,
        exchange: str | None = None,
        publisher: PublisherFactory = _svc_publisher,
    ) -> None:
        super().__init__()
        settings = current()   # the broker and exchange the kit's services consume from, unless given
        self.amqp_url = amqp_url or settings.amqp_url
        self.exchange = exchange or settings.exchange
        self._publisher = publisher
        self.last_result: Published | None = None
        label = {"description_width": "7em"}
        self.event_type = widgets.Dropdown(options=EVENT_TYPES, value=EVENT_TYPES[0], description="event",
                                           style=label, layout=widgets.Layout(width="17em"))
        self.routing_key = widgets.Text(value=TALK_ROUTING_KEY, description="routing key",
                                        style=label, layout=widgets.Layout(width="17em"))
        self.count = widgets.BoundedIntText(value=1, min=1, max=MAX_COUNT, description="count",
                                            style=label, layout=widgets.Layout(width="12em"))
        self.id_mode = widgets.ToggleButtons(options=("fixed", "fresh"), value="fixed",
                                             style={"button_width": "5em"},
                                             tooltips=("the same id every time, like the talk's 123",
                                                       "a new id for every event"))
        self.event_id = widgets.Text(value=TALK_ID, placeholder=TALK_ID, layout=widgets.Layout(width="10em"))
        self.publish_button = widgets.Button(description="publish", button_style="primary", icon="paper-plane")
        self.again_button = widgets.Button(description="publish the same again", icon="repeat", disabled=True,
                                           layout=widgets.Layout(width="auto"))
        self.id_mode.observe(lambda change: setattr(self.event_id, "disabled", change["new"] == "fresh"), "value")
        self.publish_button.on_click(lambda _button: self.publish())
        self.again_button.on_click(lambda _button: self.publish_again())
        self.widget = widgets.VBox([
            widgets.HBox([self.event_type, self.routing_key, self.count]),
            widgets.HBox([widgets.Label("id", layout=widgets.Layout(width="7em", justify_content="flex-end")),
                          self.id_mode, self.event_id]),
            widgets.HBox([self.publish_button, self.again_button]),
            self.output,
        ])

    def publish(
        self,
        event_type: str | None = None,
        *,
        event_id: str | None = None,
        fresh: bool | None = None,
        routing_key: str | None = None,
        count: int | None = None,
    ) -> Published | None:
        """Publish what the form says; arguments override it for this publish only.

        The form keeps what the presenter set: a later cell's ``publish("ban_user", ...)`` does not
        change the panel an earlier slide shows.
        """
        return self._attempt(lambda: self._send(self._batch_from_form(
            event_type=event_type, event_id=event_id, fresh=fresh, routing_key=routing_key, count=count)))

    def publish_again(self) -> Published | None:
        """Publish exactly the last batch again: the same ids, so the services see duplicates."""
        if self.last_result is None:
            self.last_error = "nothing published yet: publish first"
            self.say(self.last_error)
            return None
        return self._attempt(lambda: self._send(self.last_result.batch))

    def _batch_from_form(self, *, event_type: str | None = None, event_id: str | None = None,
                         fresh: bool | None = None, routing_key: str | None = None,
                         count: int | None = None) -> Batch:
        count = self.count.value if count is None else count
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count={count}: publish 1 to {MAX_COUNT} events at a time")
        if fresh is None:
            fresh = self.id_mode.value == "fresh" and event_id is None
        if fresh:
            ids = tuple(fresh_id() for _ in range(count))
        else:
            event_id = (self.event_id.value if event_id is None else event_id).strip()
            if not event_id:
                raise ValueError("the fixed id is empty: type one (the talk uses 123) or choose fresh ids")
            ids = (event_id,) * count
        routing_key = (self.routing_key.value if routing_key is None else routing_key).strip() or TALK_ROUTING_KEY
        event_type = self.event_type.value if event_type is None else event_type
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event type {event_type!r}: choose one of {', '.join(EVENT_TYPES)}")
        return Batch(event_type, ids, routing_key)

    def _send(self, batch: Batch) -> Published:
        confirmed = unroutable = nacked = 0
        with self._publisher(self.amqp_url, self.exchange) as publisher:
            for event_id in dict.fromkeys(batch.ids):
                result = publisher.publish(
                    {"type": batch.event_type, "id": event_id},
                    routing_key=batch.routing_key,
                    count=batch.ids.count(event_id),
                )
                confirmed += result.confirmed
                unroutable += result.unroutable
                nacked += result.nacked
        self.last_result = Published(batch, confirmed, unroutable, nacked)
        self.again_button.disabled = False
        if not _in_cell():   # a cell that publishes prints what it wants; the panel logs the clicks
            self.say(str(self.last_result))
        return self.last_result


@dataclass
class LivePublish:
    """A live chart with the publish buttons and their log beside it, for one slide: the chart
    (:class:`nirvana.plots.LiveChart`) counts ``names`` from the moment it was made."""

    panel: PublishPanel
    chart: Any
    widget: widgets.HBox

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def live_publish(names: Iterable[str], *, seconds: float = 600.0,
                 title: str = "live: counted from this slide on") -> LivePublish:
    """The chart of ``names`` (counter names) counted from now, redrawn every two seconds for
    ``seconds``, beside a publish panel's buttons (the talk's event) and its log: one row, so the
    presenter clicks and sees the lines step up on the same slide."""
    panel = PublishPanel()
    # 7 in = 1050 px: beside the 18em side panel a 1920 px slide has ~1140 px for it, so it is shown
    # unscaled and its text stays at SMALLEST_PT (25 px), as the browser test measures
    chart = plots.live_chart(list(names), graphite.mark(), seconds=seconds, title=title,
                             figsize=(7.0, plots.FIGSIZE[1]))
    side = widgets.VBox([panel.publish_button, panel.again_button, panel.output],
                        layout=widgets.Layout(width="18em", min_width="14em"))
    return LivePublish(panel, chart, widgets.HBox([chart.widget, side], layout=widgets.Layout(flex_flow="row nowrap")))


LIGHTS = {"running": "#2e7d32", "starting": "#f9a825", "stopping": "#f9a825", "stopped": "#9e9e9e"}
# any other state ("killed", "exited with status 2") is shown in FAILED_LIGHT
FAILED_LIGHT = "#c62828"


def light(state: str, detail: str = "") -> str:
    """HTML for one status light: a coloured dot and the state in words."""
    color = LIGHTS.get(state, FAILED_LIGHT)
    text = f"{state}, {detail}" if detail else state
    return f'<span style="color:{color};font-size:1.3em">&#9679;</span> {text}'


class ServicePanel(_Panel):
    """Start / stop / kill per service, a dedup switch, and a status light per service.

    The lights refresh every ``refresh_every`` seconds from one thread, which ends on close(),
    after ``refresh_for`` seconds, or when a newer panel starts refreshing (a cell run again).
    """

    _refreshing: "ServicePanel | None" = None

    def __init__(
        self,
        names: Iterable[str] = services.NAMES,
        *,
        refresh_every: float | None = REFRESH_EVERY,
        refresh_for: float = REFRESH_FOR,
    ) -> None:
        super().__init__()
        self.names = tuple(names)
        # width auto: ipywidgets gives a checkbox 300 px and cuts its label with an ellipsis
        self.dedup = widgets.Checkbox(value=False, description="dedup through etcd (ENABLE_ETCD=true)", indent=False,
                                      layout=widgets.Layout(width="auto"))
        self.lights = {name: widgets.HTML() for name in self.names}
        self.buttons: dict[str, dict[str, widgets.Button]] = {}
        rows = []
        for name in self.names:
            buttons = {
                "start": widgets.Button(description="start", icon="play", button_style="success"),
                "stop": widgets.Button(description="stop", icon="stop"),
                "kill": widgets.Button(description="kill", icon="bolt", button_style="danger"),
            }
            buttons["start"].on_click(lambda _b, name=name: self.start(name))
            buttons["stop"].on_click(lambda _b, name=name: self.stop(name))
            buttons["kill"].on_click(lambda _b, name=name: self.kill(name))
            self.buttons[name] = buttons
            label = widgets.Label(name, layout=widgets.Layout(width="6em"))
            rows.append(widgets.HBox([label, *buttons.values(), self.lights[name]]))
        self.widget = widgets.VBox([*rows, self.dedup, self.output])
        self.states: dict[str, str] = {}
        self._busy: set[str] = set()   # names in the middle of an action: the refresher leaves their light alone
        self.refresh()
        self._closed = threading.Event()
        self._refresher = None
        if refresh_every:
            if ServicePanel._refreshing is not None:
                ServicePanel._refreshing.close()
            ServicePanel._refreshing = self
            self._refresher = threading.Thread(
                target=self._keep_refreshing, args=(refresh_every, refresh_for),
                name="nirvana-service-lights", daemon=True,
            )
            self._refresher.start()

    def start(self, name: str) -> services.Service | None:
        """What the start button does: start ``name`` with the dedup switch's setting."""
        return self._act(name, "starting", lambda: services.start(name, dedup=self.dedup.value, progress=self.say))

    def stop(self, name: str) -> bool | None:
        """What the stop button does: a graceful stop (SIGTERM, SIGKILL after the deadline)."""
        return self._act(name, "stopping", lambda: services.stop(name, progress=self.say))

    def kill(self, name: str) -> bool | None:
        """What the kill button does: a crash (SIGKILL), events in flight go back to the queue."""
        return self._act(name, None, lambda: services.kill(name, progress=self.say))

    def _act(self, name: str, state: str | None, action: Callable[[], Any]) -> Any:
        self._busy.add(name)
        try:
            if state:
                self._show(name, state)
            return self._attempt(action)
        finally:
            self._busy.discard(name)
            self.refresh()

    def _show(self, name: str, state: str, detail: str = "") -> None:
        self.states[name] = state
        self.lights[name].value = light(state, detail)

    def refresh(self) -> dict[str, str]:
        """Read each service's status and set its light; return the states."""
        for name, now in services.status(self.names).items():
            if name in self._busy:
                continue
            details = [services.dedup_label(now.dedup)] if now.running else []
            if len(now.pids) > 1:
                details.append(f"{len(now.pids)} replicas")
            details.append(self._waiting(name))
            self._show(name, "running" if now.running else now.state, ", ".join(details))
        return dict(self.states)

    def _waiting(self, name: str) -> str:
        """How many events wait in the service's queue: the catch-up of chapter 2, on the light."""
        try:
            return f"{rabbit.queue_depth(name)} waiting"
        except rabbit.RabbitUnavailable:
            return "RabbitMQ not answering"
        except rabbit.NoSuchQueue:
            return "no queue yet (events published now are not kept for it)"

    def _keep_refreshing(self, every: float, seconds: float) -> None:
        remaining = seconds
        while remaining > 0 and not self._closed.wait(every):
            remaining -= every
            try:
                self.refresh()
            except Exception as error:  # shown, not raised: a thread has no cell to raise into
                self.say(f"status refresh failed: {error}")

    def close(self) -> None:
        """Stop refreshing the lights (the services keep running)."""
        self._closed.set()
        if self._refresher is not None:
            self._refresher.join(timeout=2 * REFRESH_EVERY + 1)


__all__ = ["PublishPanel", "ServicePanel", "LivePublish", "live_publish", "LOG_LINES", "Batch", "Published", "light", "fresh_id", "EVENT_TYPES"]
