"""Counts the kit shows are complete or say they are not; a reset leaves no metric behind.

statsd drops a flush it cannot deliver to carbon, with the counts it held: Graphite then shows fewer
events than were processed. nirvana.graphite reads statsd's own series and admin port and says so
(``57 (incomplete: statsd could not reach carbon at 05:13:34 (7 flushes failed))``); a complete
count prints as before, a bare number. And statsd sends a zero for every counter it has seen at
each flush, so ``reset`` deletes statsd's metrics before the whisper files, or they come back.

The pure rules first; then the real stack: the kit's own carbon stopped while a real ``python -m
svc`` processes events, statsd stopped and started, 1,000 idle counters reset. Those tests stop
components or reset the whole stack: marked ``stack`` (run last, each leaves the stack up).
"""

import json
import re
import socket
import threading
import time
import uuid

import pika
import pytest
from conftest import native_only

from nirvana import endpoints, graphite, rabbit, services, stack
from nirvana._wait import poll, quiet
from nirvana.graphite import Count, Gap, Incomplete, Series
from nirvana.stack.statsd import FlushState
from svc import metrics

INCOMPLETE = re.compile(r"\d+ \(incomplete: statsd could not reach carbon at \d\d:\d\d:\d\d \(\d+ flushes failed\)\)")


# ---------------------------------------------------------------- the rules (pure)


def series(name, values_by_ts):
    return Series(name, tuple(sorted(values_by_ts.items())))


def statsd_series(stamps, *, delivered_before=None, lags=None):
    """statsd's own series for flushes in Graphite at ``stamps``: FLUSHED (a point each), DELIVERED
    (the previous stamp, or ``delivered_before[ts]``) and SKIPS (0, or ``lags[ts]``), 1 s apart."""
    delivered_before, lags = delivered_before or {}, lags or {}
    span = range(min(stamps) - 2, max(stamps) + 3)
    flushed = series("f", {ts: (5.0 if ts in stamps else None) for ts in span})
    delivered = series("d", {ts: (float(delivered_before.get(ts, ts - 1)) if ts in stamps else None) for ts in span})
    skips = series("s", {ts: (float(lags.get(ts, 0)) if ts in stamps else None) for ts in span})
    return delivered, skips, flushed


def healthy(now, *, started=0.0):
    return FlushState(read_at=now, started=started, last_flush=round(now) - 1)


def test_every_flush_of_the_window_in_graphite_is_complete():
    delivered, skips, flushed = statsd_series(list(range(100, 120)))
    assert graphite.check(103.2, 118.5, delivered, skips, flushed, healthy(118.5)) is None


def test_flushes_statsd_could_not_deliver_make_the_window_incomplete():
    # Given carbon down from 105 to 111: statsd's flush at 112 says it delivered 104 before
    stamps = [ts for ts in range(100, 120) if not 105 <= ts <= 111]
    delivered, skips, flushed = statsd_series(stamps, delivered_before={112: 104})
    found = graphite.check(103.2, 118.5, delivered, skips, flushed, healthy(118.5))
    assert found == Incomplete((Gap("failed", 105, 7),))
    assert found.flushes == 7
    assert re.fullmatch(r"incomplete: statsd could not reach carbon at \d\d:\d\d:\d\d \(7 flushes failed\)", str(found))
    # a window after the outage is complete; one that holds part of it counts that part
    assert graphite.check(112.6, 118.5, delivered, skips, flushed, healthy(118.5)) is None
    assert graphite.check(108.6, 118.5, delivered, skips, flushed, healthy(118.5)).flushes == 3


def test_a_flush_failing_now_is_said_to_go_on():
    # Given statsd's last delivered flush at 110, read at 116.4
    delivered, skips, flushed = statsd_series(list(range(100, 111)))
    state = FlushState(read_at=116.4, started=0.0, last_flush=110)
    found = graphite.check(103.2, 116.4, delivered, skips, flushed, state)
    assert found == Incomplete((Gap("failing", 111, 5),))
    assert "statsd cannot reach carbon since" in str(found) and str(found).endswith("(5 flushes failed so far)")


def test_seconds_statsd_skipped_are_not_missing_but_flushes_carbon_lost_are():
    # Given statsd skipping 107 (a late flush: its stamp jumped, lag 1) and carbon losing 112-113
    # that statsd delivered (carbon ended before writing them)
    stamps = [ts for ts in range(100, 120) if ts not in (107, 112, 113)]
    delivered, skips, flushed = statsd_series(stamps, delivered_before={108: 106, 114: 113}, lags={108: 1})
    found = graphite.check(103.2, 118.5, delivered, skips, flushed, healthy(118.5))
    assert found == Incomplete((Gap("lost", 112, 2),))
    assert str(found).startswith("incomplete: carbon lost 2 flushes statsd delivered at ")


def test_statsd_restarted_or_not_answering_makes_the_window_incomplete():
    delivered, skips, flushed = statsd_series(list(range(100, 120)))
    restarted = graphite.check(103.2, 118.5, delivered, skips, flushed, healthy(118.5, started=110.0))
    assert [gap.kind for gap in restarted.gaps] == ["restarted"]
    assert "statsd restarted at" in str(restarted)
    gone = graphite.check(103.2, 118.5, delivered, skips, flushed, None)
    assert str(gone) == ("incomplete: statsd is not answering on its admin port 8126: counts sent to it are lost "
                         "(`./kit up` starts it)")
    # seconds while statsd was down are its restart's, not flushes carbon lost
    stamps = [ts for ts in range(100, 120) if not 106 <= ts <= 109]
    delivered, skips, flushed = statsd_series(stamps, delivered_before={110: 109})
    found = graphite.check(103.2, 118.5, delivered, skips, flushed, healthy(118.5, started=109.0))
    assert [gap.kind for gap in found.gaps] == ["restarted"]


def test_a_complete_count_prints_as_the_number_it_is_and_an_incomplete_one_says_so():
    complete = Count(57)
    assert (str(complete), f"{complete}", repr(complete), f"{complete:>4}") == ("57", "57", "57", "  57")
    assert complete == 57 and complete + 1 == 58 and complete.complete
    short = Count(57, Incomplete((Gap("failed", 0, 7),)))
    assert not short.complete and short == 57
    assert re.fullmatch(r"57 \(incomplete: statsd could not reach carbon at \d\d:\d\d:\d\d \(7 flushes failed\)\)",
                        f"{short}")
    assert str(short) == repr(short) == f"{short}"


# ---------------------------------------------------------------- the real stack


def publish(url, exchange, ids):
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for event_id in ids:
            channel.basic_publish(exchange, "foo", json.dumps({"type": "new_order", "id": event_id}).encode())


def publish_steadily(url, exchange, count, seconds):
    """Publish ``count`` events spread over ``seconds`` (a thread)."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        for number in range(count):
            channel.basic_publish(exchange, "foo", json.dumps({"type": "new_order", "id": f"s{number}"}).encode())
            time.sleep(seconds / count)


@pytest.mark.slow
@pytest.mark.stack
def test_a_count_while_carbon_was_down_says_it_is_incomplete(kit_env, graphite_url):
    # kit_env: an exchange and prefix of the test's own, the stack's own state folder (its carbon)
    native_only("carbon", "statsd")
    kit = kit_env
    name, events = f"a{kit['tag']}", 200
    kit["services"].append(name)
    ok = metrics.ok(name, "new_order")
    services.start(name, progress=quiet)
    since = graphite.mark()
    # Given 200 events processed over 8 s, while the kit's own carbon is stopped for 5 s of them
    sender = threading.Thread(target=publish_steadily, args=(kit["url"], kit["exchange"], events, 8.0))
    sender.start()
    try:
        time.sleep(2.0)
        stack.down(progress=quiet, only=["carbon"])
        time.sleep(5.0)
    finally:
        stack.up(progress=quiet, only=["carbon"])
        sender.join(timeout=30)
    rabbit.wait_for_depth(name, 0, exchange=kit["exchange"], timeout=20, progress=quiet)
    time.sleep(2.5)   # the last events' flush has reached Graphite
    # When the kit reads the count, I expect it to say that it is incomplete, and why
    count = graphite.counter(ok, since)
    assert INCOMPLETE.fullmatch(str(count)), f"a count missing flushes printed as {str(count)!r}"
    assert count < events and not count.complete
    # and a plot of it to say so under it and in its title
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nirvana import plots

    lines = []
    figure = plots.plot_counters([ok], since, progress=lines.append)
    assert [line for line in lines if line.startswith("note: incomplete: statsd could not reach carbon at ")], lines
    assert figure.axes[0].get_title() == "counted since the mark (incomplete)"
    plt.close(figure)
    # and a wait for the whole count to end naming it, not only the number seen
    with pytest.raises(TimeoutError, match=r"\(incomplete: statsd could not reach carbon at "):
        graphite.wait_for(ok, events, since, timeout=2, progress=quiet)
    # A window after carbon is back is complete: the count prints as the bare number, as before
    after = graphite.mark()
    publish(kit["url"], kit["exchange"], [f"after{number}" for number in range(10)])
    lines = []
    value = graphite.wait_for(ok, 10, after, timeout=15, progress=lines.append)
    assert (str(value), lines[-1]) == ("10", f"{ok} = 10")


@pytest.mark.stack
def test_a_count_across_a_statsd_restart_says_it_is_incomplete(graphite_url):
    native_only("statsd")
    since = graphite.mark()
    time.sleep(1.5)
    stack.down(progress=quiet, only=["statsd"])
    try:
        # While statsd is down, counts sent to it are lost: the count says so
        gone = graphite.counter("nirvana_test_nothing", since)
        assert str(gone) == ("0 (incomplete: statsd is not answering on its admin port 8126: counts sent to it are "
                             "lost (`./kit up` starts it))")
    finally:
        stack.up(progress=quiet, only=["statsd"])
    # and once it is back, that it restarted after the mark
    back = graphite.counter("nirvana_test_nothing", since)
    assert re.fullmatch(r"0 \(incomplete: statsd restarted at \d\d:\d\d:\d\d: the counts it held or was sent "
                        r"while down are lost\)", str(back)), str(back)


def admin(command):
    with socket.create_connection((endpoints.HOST, endpoints.STATSD_ADMIN_PORT), timeout=5) as conn:
        conn.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"END\n\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


IDLE = 1_000
BACK_WITHIN = 5.0   # seconds: statsd flushes every second, carbon writes at once


@pytest.mark.stack
def test_reset_leaves_no_metric_behind_not_even_an_idle_counter(graphite_url):
    native_only("carbon", "statsd")
    tag = uuid.uuid4().hex[:8]
    names = [f"nirvana_idle_{tag}_{number}" for number in range(IDLE)]
    files = [stack.whisper_dir() / folder / f"{name}.wsp" for name in names for folder in ("stats_counts", "stats")]
    # Given 1,000 counters statsd has seen once, each with its two whisper files
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for start in range(0, IDLE, 20):
            udp.sendto("\n".join(f"{name}:1|c" for name in names[start:start + 20]).encode(),
                       (endpoints.HOST, endpoints.STATSD_PORT))
    try:
        poll(lambda: sum(path.exists() for path in files), lambda seen: seen == len(files),
             what=f"the {len(files)} whisper files", timeout=60, progress=quiet)
        # When the stack is reset, and 5 s pass (idle, statsd would have sent them a zero 5 times)
        stack.reset(progress=quiet)
        time.sleep(BACK_WITHIN)
        # I expect none of their files back
        back = [path for path in files if path.exists()]
        assert back == [], f"{len(back)} of {len(files)} whisper files back {BACK_WITHIN:g} s after the reset"
    finally:
        for start in range(0, IDLE, 100):
            admin("delcounters " + " ".join(names[start:start + 100]))
        time.sleep(1.5)
        for path in files:
            path.unlink(missing_ok=True)
