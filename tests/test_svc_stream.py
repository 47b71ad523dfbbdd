"""svc.stream's read edges against the kit's real RabbitMQ, while the log's stream has no member up.

RabbitMQ 3.10 answers a reader of a stream whose member process is not up (declared a moment ago,
or being restarted) with basic.consume-ok, then crashes the channel (``noproc`` in
osiris:init_reader) and closes the whole connection with 541 INTERNAL_ERROR (svc.stream.member_away).
Here the member is made away on purpose: a process inside the broker (``rabbitmqctl eval``) kills
the stream's member every KILL_EVERY seconds for a while, and the coordinator starts it again each time.
"""

import datetime
import subprocess
import time

import pytest

from conftest import need_rabbitmqctl
from nirvana import history, replay, stack
from nirvana.publisher import Publisher, publish_bodies
from svc import topology
from svc.errors import SvcError
from svc.stream import log_end, log_start

KILL_EVERY = 0.1   # seconds between two kills of the stream's member
START_IN = 0.2     # seconds after rabbitmqctl returns before the first kill


def kill_members(name: str, seconds: float, every: float = KILL_EVERY) -> float:
    """Have the broker kill the member of stream ``name`` (its queue record's pid, and the member the
    stream coordinator names) every ``every``
    seconds for ``seconds``, starting START_IN s from the return; the time.monotonic() it ends."""
    need_rabbitmqctl("to kill a stream's member inside the broker")
    kills = max(int(seconds / every), 1)
    expression = (f'Q = rabbit_misc:r(<<"/">>, queue, <<"{name}">>), '
                  f'spawn(fun() -> timer:sleep({int(START_IN * 1000)}), lists:foreach(fun(_) -> '
                  '{ok, X} = rabbit_amqqueue:lookup(Q), #{name := Id} = amqqueue:get_type_state(X), '
                  'catch exit(amqqueue:get_pid(X), kill), '
                  'case rabbit_stream_coordinator:local_pid(Id) of {ok, P} -> exit(P, kill); _ -> ok end, '
                  f'timer:sleep({int(every * 1000)}) end, lists:seq(1, {kills})) end), ok.')
    subprocess.run([*stack.rabbitmq_node().ctl(), "-q", "eval", expression], capture_output=True, text=True,
                   timeout=60, check=True)
    return time.monotonic() + START_IN + kills * every


@pytest.fixture
def log(kit_env):
    """The test's log (a stream) with 20 events: (url, exchange, stream name, last offset)."""
    replay.reset_log()
    with Publisher():
        pass
    publish_bodies([b'{"type":"new_order","id":"s-%d","args":{}}' % i for i in range(20)])
    end = None
    deadline = time.monotonic() + 10
    while end is None and time.monotonic() < deadline:   # the events reach the log within a moment
        end = log_end(kit_env["url"], kit_env["exchange"], timeout=0.5)
    assert end is not None
    return kit_env["url"], kit_env["exchange"], topology.log_name(kit_env["exchange"]), end


def test_the_read_edges_read_again_while_the_streams_member_is_away(log):
    # Given the log's member killed every 0.1 s for 1.5 s (each read meets it away, or up again)
    url, exchange, name, end = log
    until = kill_members(name, 1.5)
    # When log_start and log_end read all along (as a test's or chapter's reads right after a reset do)
    answers, failures = [], []
    while time.monotonic() < until + 0.3:
        try:
            answers.append((log_start(url, exchange), log_end(url, exchange)))
        except SvcError as error:
            failures.append(str(error))
    # I expect every read answered with the log's offsets: none met the broker's 541 (or a 406)
    assert failures == [], f"{len(failures)} of {len(failures) + len(answers)} reads failed: {failures[:3]}"
    assert answers and set(answers) == {(0, end)}


@pytest.mark.parametrize("prefetch", [None, 3], ids=["whole-chunk-credit", "credit-3"])
def test_the_end_of_a_log_whose_last_chunk_comes_in_a_trickle_is_its_last_event(log, monkeypatch, prefetch):
    from urllib.parse import urlsplit

    from nirvana.proxy import HandshakeProxy
    from svc import stream

    # Given 2,000 more events in the log, published at once (the broker writes them in chunks of
    # up to hundreds), read through a link that brings the broker's bytes 1,000 every 0.15 s, longer
    # than a turn of the reader's loop (a chunk's rest after a pause, as a loaded broker sends it: a
    # CI run read the end of 20,001 events as 19,996) — with the reader's whole credit, or with a
    # credit of 3 (the rest of the chunk then comes only after the acks' round trip)...
    url, exchange, _, _ = log
    publish_bodies([b'{"type":"new_order","id":"t-%d","args":{}}' % i for i in range(2000)])
    offsets = []   # every event's offset, read from the first (a read that knows how many to wait for)
    stream.read(url, exchange, "first", lambda channel, method, properties, body: (
        offsets.append(properties.headers[stream.OFFSET_HEADER]), channel.basic_ack(method.delivery_tag)),
        lambda: len(offsets) >= 2020, 30, prefetch=500, doing="reading the whole log")
    assert len(offsets) == 2020
    if prefetch:
        monkeypatch.setattr(stream, "LAST_PREFETCH", prefetch, raising=False)
    broker = urlsplit(url)
    with HandshakeProxy((broker.hostname, broker.port)) as proxy:
        proxy.pace = (1000, 0.15)
        # I expect log_end to read to the last event, not stop at the first pause (before: 1942, 2016)
        assert log_end(proxy.url(url), exchange, timeout=60) == max(offsets)


@pytest.mark.slow
def test_a_stream_deleted_and_declared_again_is_read_at_once(kit_env):
    # Given the log deleted and declared again (reset_log), time after time
    failures = []
    for _ in range(10):
        replay.reset_log()
        # When it is read at once, as chapter 10 and the history test do; I expect it empty, no error
        try:
            assert log_start(kit_env["url"], kit_env["exchange"], timeout=0.1) is None
            with pytest.raises(replay.RebuildError, match="is empty"):
                history.as_of(datetime.datetime.now(datetime.timezone.utc))
        except SvcError as error:
            failures.append(str(error))
    assert failures == []
