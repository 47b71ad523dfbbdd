"""nirvana.graphite: the bucket arithmetic of a counter since a mark, and the real render API."""

import threading
import time
import uuid

import pytest
import requests
import statsd

from conftest import native_only
from nirvana import endpoints, graphite, prune
from nirvana._wait import poll
from nirvana.stack.carbon import whisper_dir
from whisper_files import nonzero_points

GUNICORN_REQUEST_LINE = 4094   # bytes: gunicorn's default limit_request_line (docs.gunicorn.org, settings)

# ---------------------------------------------------------------- bucket arithmetic (pure)


def one_second_series(values_by_ts):
    return graphite.Series("x", tuple(sorted(values_by_ts.items())))


def test_a_counter_sums_the_whole_buckets_from_the_mark_to_the_last_ended_one():
    # Given 1 s buckets stamped 100..105, each holding 1, 2, 4, 8, 16, 32
    series = one_second_series({100: 1, 101: 2, 102: 4, 103: 8, 104: 16, 105: 32})
    # When I count from a mark at 101.3 (statsd would stamp it 101) at 104.2
    # I expect buckets 101, 102, 103: 104 has not ended, its flush may still be on its way
    assert series.buckets(101.3, 104.2) == [(101, 2), (102, 4), (103, 8)]
    assert series.total(101.3, 104.2) == 14


def test_the_mark_is_rounded_like_statsd_rounds_its_flush_stamps():
    series = one_second_series({100: 1, 101: 2, 102: 4, 103: 8})
    # A flush after a mark at 100.5 is stamped Math.round(>= 100.5) >= 101: bucket 100 is before it
    assert series.total(100.5, 104.0) == 14
    # A flush after a mark at 100.4 may be stamped 100 (flushed at 100.45): bucket 100 counts
    assert series.total(100.4, 104.0) == 15


def test_the_partial_newest_bucket_is_dropped_until_its_interval_has_ended():
    series = one_second_series({100: 1, 101: 2})
    assert series.total(99.0, 101.999) == 1    # bucket 101 spans [101, 102): still open
    assert series.total(99.0, 102.0) == 3      # now it has ended: final


def test_empty_buckets_read_as_zero():
    series = one_second_series({100: None, 101: 3, 102: None})
    assert series.total(99.0, 110.0) == 3
    # plotted at each bucket's end, in seconds after the mark
    xs, ys = series.cumulative(99.6, 110.0)
    assert xs == pytest.approx([1.4, 2.4, 3.4]) and ys == [0, 3, 3]


def test_coarser_buckets_use_the_step_graphite_returns():
    # Given 10 s buckets (the docker image's retention)
    series = one_second_series({100: 5, 110: 7, 120: 11, 130: 13})
    assert series.step == 10
    # The mark falls in bucket 110 and bucket 130 has not ended at 135: 110 and 120 count
    assert series.total(115.0, 135.0) == 18


def test_a_counter_that_does_not_exist_reads_as_zero():
    missing = graphite.Series("never_counted", exists=False)
    assert missing.total(0, time.time()) == 0
    assert missing.cumulative(0, time.time()) == ([], [])


# ---------------------------------------------------------------- waits (pure)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_wait_says_what_it_waits_for_and_returns_the_value_that_satisfied_it():
    clock, lines, values = FakeClock(), [], iter([0, 1, 2, 3])
    seen = poll(lambda: next(values), lambda v: v >= 2, what="x >= 2", timeout=10,
                progress=lines.append, clock=clock, sleep=clock.sleep)
    assert seen == 2
    assert lines == ["waiting for x >= 2 (up to 10 s)"]


# Seen in CI (a normal user's run, chapter 09): the wait for every id to be processed read the effects
# in etcd and one read's DEADLINE_EXCEEDED (a cluster just after its faults, a loaded machine) ended
# the whole chapter, though the wait had minutes left. A read error of a kind named transient is
# "not yet"; any other error still ends the wait at once.
def test_a_wait_reads_through_transient_errors_until_its_deadline_and_names_the_last():
    clock, lines = FakeClock(), []
    script = iter([ConnectionError("etcd: no leader"), 1, ConnectionError("etcd: no leader"), 3])

    def read():
        step = next(script)
        if isinstance(step, Exception):
            raise step
        return step

    assert poll(read, lambda v: v >= 3, what="x >= 3", timeout=10, progress=lines.append, clock=clock,
                sleep=clock.sleep, interval=1, transient=(ConnectionError,)) == 3
    with pytest.raises(TimeoutError, match=r"gave up after 2 s waiting for x: saw ConnectionError: etcd: no leader"):
        poll(lambda: (_ for _ in ()).throw(ConnectionError("etcd: no leader")), bool, what="x", timeout=2,
             progress=lines.append, clock=clock, sleep=clock.sleep, transient=(ConnectionError,))
    with pytest.raises(ValueError):   # not named transient: at once
        poll(lambda: int("x"), bool, what="x", timeout=2, progress=lines.append, clock=clock, sleep=clock.sleep,
             transient=(ConnectionError,))


def test_a_wait_that_times_out_names_what_it_saw_and_reported_while_waiting():
    clock, lines = FakeClock(), []
    with pytest.raises(TimeoutError, match=r"gave up after 7 s waiting for x >= 2: saw x = 1"):
        poll(lambda: 1, lambda v: v >= 2, what="x >= 2", timeout=7, progress=lines.append,
             describe=lambda v: f"x = {v}", clock=clock, sleep=clock.sleep)
    assert lines[0] == "waiting for x >= 2 (up to 7 s)"
    assert lines[1].startswith("  still waiting after 5 s: x = 1")


# ---------------------------------------------------------------- the real render API


def test_wait_for_sees_a_real_counter_reach_its_target(graphite_url):
    # Given a counter nobody has used, incremented 3 times through statsd after a mark
    name = f"nirvana_test_{uuid.uuid4().hex[:8]}"
    since = graphite.mark()
    assert graphite.counter(name, since, url=graphite_url) == 0
    client = statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT)
    for _ in range(3):
        client.incr(name)
    lines = []
    # When I wait for it to reach 3, I expect 3, one line to start and one with the value
    assert graphite.wait_for(name, 3, since, timeout=10, progress=lines.append, url=graphite_url) == 3
    assert lines[0] == f"waiting for {name} >= 3 (up to 10 s)"
    assert lines[-1] == f"{name} = 3"
    # and the series exists now, with nothing counted before the mark
    assert graphite.fetch([name], since, url=graphite_url)[name].exists
    assert graphite.counter(name, time.time() + 2, url=graphite_url) == 0


def test_a_metric_that_does_not_exist_is_zero_and_a_wait_for_it_names_it(graphite_url):
    name = f"nirvana_never_{uuid.uuid4().hex[:8]}"
    since = graphite.mark()
    assert graphite.fetch([name], since, url=graphite_url)[name].exists is False
    assert graphite.counters([name, name], since, url=graphite_url) == {name: 0}
    with pytest.raises(TimeoutError, match=rf"{name} = 0 \(want 1\)"):
        graphite.wait_for(name, 1, since, timeout=0.5, progress=lambda _: None, url=graphite_url)


def test_graphite_down_says_which_command_starts_it():
    closed = f"http://{endpoints.HOST}:9"   # the discard port: nothing listens on loopback
    with pytest.raises(graphite.GraphiteUnavailable, match=r"not answering at .*`\./kit up`"):
        graphite.counter("anything", time.time(), url=closed)


def test_counter_names_are_the_talks_names_by_service():
    assert graphite.counter_names() == [
        "orders_new_order_ok", "orders_new_order_skipped", "notify_new_order_ok", "notify_new_order_skipped"]
    assert graphite.counter_names(["notify"], "ban_user", ["ok"]) == ["notify_ban_user_ok"]


def test_a_query_for_120_long_counter_names_reads_each_one(graphite_url):
    # Given 120 counters as svc names them (40 services with 32-character names, the longest svc
    # allows, three outcomes each), one of them counted twice after the mark
    tag = uuid.uuid4().hex[:8]
    services = [f"s{i:02d}{tag}".ljust(32, "x") for i in range(40)]
    names = graphite.counter_names(services, "new_order", ("ok", "skipped", "conflict"))
    since = graphite.mark()
    as_get = requests.Request("GET", f"{graphite_url}/render",
                              params=[("target", graphite.PREFIX + n) for n in names]).prepare()
    assert len(f"GET {as_get.path_url} HTTP/1.1") > GUNICORN_REQUEST_LINE   # as a GET it would be refused
    client = statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT)
    for _ in range(2):
        client.incr(names[-1])
    # When the kit waits on all of them in one query, I expect every value read: 2 and 119 zeros
    values = graphite.wait_until({**{n: 0 for n in names}, names[-1]: 2}, since, timeout=10,
                                 progress=lambda _: None, url=graphite_url)
    assert values[names[-1]] == 2 and sum(values.values()) == 2 and len(values) == 120


def test_graphite_answering_an_error_is_not_called_down(graphite_url):
    # Given graphite-web up, asked at a path it has no render API under (it answers 404)
    with pytest.raises(graphite.GraphiteError) as error:
        graphite.counter("anything", time.time(), url=f"{graphite_url}/no-such-prefix")
    # I expect one line with its answer, never "not answering ... ./kit up"
    assert not isinstance(error.value, graphite.GraphiteUnavailable)
    assert "HTTP 404" in str(error.value) and "not answering" not in str(error.value)
    assert "\n" not in str(error.value)


def test_a_series_read_while_carbon_creates_its_file_is_read_again_not_an_error(graphite_url):
    # Given a counter whose whisper file carbon has created but not yet written (whisper writes the
    # header right after creating the file in place: graphite-web reading it then raises
    # CorruptWhisperFile and answers HTTP 500), written a moment later
    native_only("carbon")
    service = f"tc{uuid.uuid4().hex[:8]}"
    name, model = f"{service}_creating", f"{service}_model"
    since = graphite.mark()
    statsd.StatsClient(endpoints.HOST, endpoints.STATSD_PORT).incr(model)
    folder = whisper_dir() / graphite.PREFIX.strip(".")
    [(stamp, _one)] = poll(lambda: nonzero_points(folder / f"{model}.wsp"), bool, what=f"{model}'s count on disk",
                           timeout=30, progress=lambda _: None)
    time.sleep(max(0.0, stamp + 1.1 - time.time()))   # its 1 s bucket ended: a read counts it, not partial
    creating = folder / f"{name}.wsp"
    creating.touch()
    writer = threading.Timer(0.4, lambda: creating.write_bytes((folder / f"{model}.wsp").read_bytes()))
    writer.start()
    try:
        # When the kit reads it (as a panel does right after a chapter's first event), I expect its
        # count, not "HTTP 500"
        assert graphite.counters([name], since, url=graphite_url) == {name: 1}
    finally:
        writer.join()
        prune.prune([service])
