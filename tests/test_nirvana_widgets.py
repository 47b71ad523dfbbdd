"""nirvana.widgets: what each button does is the same call in code; state tells what happened."""

import time

from nirvana import graphite, rabbit, services, widgets
from svc.publisher import PublishResult

# ---------------------------------------------------------------- PublishPanel with a stand-in


class FakePublisher:
    """Records what would have been published; confirms everything (unit tests only)."""

    def __init__(self):
        self.sent = []
        self.fail = None

    def __call__(self, amqp_url, exchange):
        self.exchange = exchange
        return self

    def __enter__(self):
        if self.fail:
            raise self.fail
        return self

    def __exit__(self, *exc):
        return False

    def publish(self, event, routing_key="foo", count=1, fresh_ids=False):
        self.sent += [(event["type"], event["id"], routing_key)] * count
        return PublishResult(confirmed=count, unroutable=0, nacked=0, ids=(event["id"],) * count)


def out_text(panel):
    return "".join(item.get("text", "") for item in panel.output.outputs)


def test_the_publish_button_publishes_the_talks_event_by_default():
    fake = FakePublisher()
    panel = widgets.PublishPanel(publisher=fake)
    panel.publish_button.click()
    assert fake.sent == [("new_order", "123", "foo")]
    assert panel.last_result.ok and panel.last_error is None
    assert out_text(panel) == "published 1 x new_order id 123 (routing key foo): 1 confirmed\n"


def test_publish_in_code_leaves_the_form_as_the_presenter_set_it_and_again_sends_the_same_ids():
    # Given a panel shown on an early slide, when a later cell publishes something else
    fake = FakePublisher()
    panel = widgets.PublishPanel(publisher=fake)
    assert panel.again_button.disabled
    first = panel.publish("ban_user", fresh=True, count=3, routing_key="bar")
    # I expect the form unchanged (the slide shows the talk's event), the events as asked
    assert (panel.event_type.value, panel.id_mode.value, panel.count.value) == ("new_order", "fixed", 1)
    assert {(event_type, routing_key) for event_type, _, routing_key in fake.sent} == {("ban_user", "bar")}
    panel.id_mode.value = "fresh"
    assert panel.event_id.disabled   # fresh ids: the fixed id field is greyed out
    ids = [event_id for _, event_id, _ in fake.sent]
    assert len(set(ids)) == 3 and first.confirmed == 3
    # "publish the same again" repeats those very ids (duplicates), not new ones
    panel.again_button.click()
    assert [event_id for _, event_id, _ in fake.sent[3:]] == ids
    assert panel.last_result.batch == first.batch
    # a fresh click makes new ids
    panel.publish_button.click()
    assert not set(event_id for _, event_id, _ in fake.sent[6:]) & set(ids)


def test_a_fixed_id_with_a_count_publishes_duplicates():
    fake = FakePublisher()
    panel = widgets.PublishPanel(publisher=fake)
    result = panel.publish(event_id="123", count=4)
    assert fake.sent == [("new_order", "123", "foo")] * 4
    assert str(result) == "published 4 x new_order id 123 (routing key foo): 4 confirmed"


def test_errors_go_to_the_output_and_last_error_never_out_of_a_click():
    fake = FakePublisher()
    panel = widgets.PublishPanel(publisher=fake)
    panel.again_button.click()
    assert panel.last_error == "nothing published yet: publish first"
    fake.fail = ConnectionError("RabbitMQ is not answering at 127.0.0.1:5672: start the stack with `./kit up`")
    panel.publish_button.click()
    assert panel.last_result is None
    assert panel.last_error.startswith("ConnectionError: RabbitMQ is not answering")
    assert out_text(panel).endswith("error: " + panel.last_error + "\n")
    fake.fail = None
    panel.publish(event_id="  ")
    assert "the fixed id is empty" in panel.last_error and fake.sent == []


def test_a_status_light_is_a_coloured_dot_and_words():
    assert widgets.light("running", "dedup on").endswith("&#9679;</span> running, dedup on")
    assert widgets.LIGHTS["running"] in widgets.light("running")
    assert widgets.FAILED_LIGHT in widgets.light("exited with status 2")


# ---------------------------------------------------------------- with RabbitMQ and python -m svc


def test_a_click_really_publishes_to_the_queues(kit):
    panel = widgets.PublishPanel(exchange=kit["exchange"])
    panel.count.value = 2
    panel.publish_button.click()
    assert panel.last_error is None and panel.last_result.ok
    # nobody consumes yet: both copies wait in each service's queue
    assert rabbit.queue_depth("orders", exchange=kit["exchange"]) == 2
    panel.again_button.click()
    assert rabbit.queue_depth("notify", exchange=kit["exchange"]) == 4


def test_service_panel_buttons_start_kill_and_stop_with_the_lights_following(kit):
    name = kit["names"]["a"]
    panel = widgets.ServicePanel(names=[name], refresh_every=None)
    assert panel.states == {name: "stopped"}
    panel.dedup.value = True
    panel.buttons[name]["start"].click()
    assert panel.last_error is None and panel.states == {name: "running"}
    assert "dedup on" in panel.lights[name].value
    assert services.running(name).dedup is True
    panel.buttons[name]["kill"].click()
    # after a SIGKILL the light says killed (red), not stopped
    assert panel.states == {name: "killed"} and services.running_pids() == []
    assert widgets.FAILED_LIGHT in panel.lights[name].value
    assert f"{name}: killed (SIGKILL)" in out_text(panel)
    # events published while it is down wait in its queue, and its light says how many
    widgets.PublishPanel(exchange=kit["exchange"]).publish(count=2)
    panel.refresh()
    assert panel.lights[name].value.endswith("killed, 2 waiting")
    panel.start(name)
    panel.buttons[name]["stop"].click()
    assert panel.states == {name: "stopped"} and out_text(panel).endswith(f"{name}: stopped\n")


def test_the_lights_refresh_by_themselves_until_the_panel_is_closed(kit):
    name = kit["names"]["b"]
    panel = widgets.ServicePanel(names=[name], refresh_every=0.1)
    services.start(name, progress=lambda _: None)   # started elsewhere: the light must notice
    deadline = time.monotonic() + 5
    while panel.states[name] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert panel.states[name] == "running"
    # a newer panel (the cell run again) takes over: the older one stops refreshing
    newer = widgets.ServicePanel(names=[name], refresh_every=0.1)
    assert not panel._refresher.is_alive()
    newer.close()
    assert not newer._refresher.is_alive()


def test_a_failed_start_turns_the_light_red_and_says_why(kit, monkeypatch):
    name = kit["names"]["b"]
    monkeypatch.setenv("PREFETCH", "lots")
    panel = widgets.ServicePanel(names=[name], refresh_every=None)
    panel.start(name)
    assert panel.states[name] == "exited with status 2"
    assert widgets.FAILED_LIGHT in panel.lights[name].value
    assert "PREFETCH" in panel.last_error


def test_the_talks_idempotency_shows_in_graphite_after_clicks(kit, graphite_url):
    # Given a service deduplicating through etcd, and a mark
    name = kit["names"]["a"]
    services.start(name, dedup=True, progress=lambda _: None)
    since = graphite.mark()
    # When the talk's event is published, then the same again twice
    panel = widgets.PublishPanel(exchange=kit["exchange"])
    panel.publish_button.click()
    panel.again_button.click()
    panel.again_button.click()
    # I expect it processed once and skipped twice, as counted by statsd and read from Graphite
    ok, skipped = f"{name}_new_order_ok", f"{name}_new_order_skipped"
    seen = graphite.wait_until({ok: 1, skipped: 2}, since, timeout=10, progress=lambda _: None)
    assert seen == {ok: 1, skipped: 2}
    assert rabbit.queue_depth(name, exchange=kit["exchange"]) == 0



def test_a_chapters_teardown_ends_its_live_charts_and_keeps_the_lights_true(kit, capsys):
    # Given a chapter's panel refreshing its lights and a live chart, as chapter 1 leaves them
    import nirvana
    from nirvana import plots
    name = kit["names"]["a"]
    panel = widgets.ServicePanel(names=[name], refresh_every=0.1)
    chart = plots.live_chart(["x"], time.time(), seconds=60, every=0.1, fetch=lambda names, since: {})
    assert chart.running
    # When the chapter's teardown cell runs
    nirvana.teardown()
    # I expect no chart left redrawing beside the next chapter's kernel
    assert not chart.running
    assert "svc processes left: 0" in capsys.readouterr().out
    # and the lights still true: a service started afterwards (from a slide, another kernel) shows
    services.start(name, progress=lambda _: None)
    deadline = time.monotonic() + 5
    while panel.states[name] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert panel.states[name] == "running"
    panel.close()


def test_a_panel_keeps_its_height_however_often_it_is_clicked():
    # Given six clicks of "publish the same again" (chapter 3's slide), I expect the panel's log to
    # show the latest LOG_LINES lines in an Output of fixed height, not a line more per click.
    fake = FakePublisher()
    panel = widgets.PublishPanel(publisher=fake)
    height = panel.output.layout.height
    panel.publish_button.click()
    for _ in range(6):
        panel.again_button.click()
    assert len(fake.sent) == 7
    assert out_text(panel).splitlines() == ["published 1 x new_order id 123 (routing key foo): 1 confirmed"] * 3
    assert len(panel.output.outputs) == 1
    assert panel.output.layout.height == height and height.endswith("em") and panel.output.layout.max_height is None
    assert "nirvana-log" in panel.output._dom_classes


def test_live_publish_puts_the_buttons_beside_the_chart_counting_from_now():
    # Given chapter 1's live slide, I expect one row: the chart, then publish, again and the log
    before = time.time()
    live = widgets.live_publish(["orders_new_order_ok"], seconds=5)
    try:
        chart, side = live.widget.children
        assert chart is live.chart.widget and live.chart.since >= before
        assert side.children == (live.panel.publish_button, live.panel.again_button, live.panel.output)
        assert live.widget.layout.flex_flow == "row nowrap"
    finally:
        live.chart.stop()
