"""``LOG_LEVEL=DEBUG`` follows one event by its id through svc's steps; pika stays quiet unless asked.

Real ``python -m svc`` processes against the real RabbitMQ and etcd (the ``svc_world`` fixture).
"""

import re

from nirvana.testing import wait_for

# svc's log format: "<date> <time> LEVEL logger: message"
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")


def lines_about(log: str, event_id: str) -> list[str]:
    """The messages of the DEBUG lines that name the event, in order."""
    found = []
    for line in log.splitlines():
        match = LINE.match(line)
        if match and match["level"] == "DEBUG" and f"event {event_id!r}:" in match["message"]:
            found.append(match["message"].split(": ", 1)[1])
    return found


def loggers(log: str) -> set[str]:
    return {match["logger"].split(".")[0] for match in map(LINE.match, log.splitlines()) if match}


def test_debug_follows_one_event_through_parse_claim_work_done_ack_and_pika_is_quiet(svc_world):
    orders = svc_world.service_name("orders")
    # Given a service with dedup on and LOG_LEVEL=DEBUG
    [process] = svc_world.start(orders, enable_etcd=True, log_level="DEBUG")
    # When the event dbg-1 is published twice (a first copy, then a repeat)
    svc_world.publish(orders, {"type": "new_order", "id": "dbg-1"})
    wait_for(lambda: svc_world.effects(orders, "dbg-1") == 1 and svc_world.depth(orders) == 0, "dbg-1 processed")
    svc_world.publish(orders, {"type": "new_order", "id": "dbg-1"})
    wait_for(lambda: lines_about(process.log(), "dbg-1").count("acked") == 2, "the repeat acked")
    assert process.stop() == 0
    log = process.log()
    # I expect its own lines to tell the story by id, in order, and the repeat to be a skip
    assert lines_about(log, "dbg-1") == [
        "parsed new_order", "claim: claimed", "work (0 ms)", "done mark and effect written", "acked",
        "parsed new_order", "claim: skipped", "acked",
    ]
    # and not a line from pika (it speaks only when PIKA_LOG_LEVEL asks it to)
    assert "pika" not in loggers(log), [line for line in log.splitlines() if " pika." in line][:5]
    assert "svc" in loggers(log)


def test_dedup_off_says_there_is_no_claim_and_pika_speaks_when_asked(svc_world):
    notify = svc_world.service_name("notify")
    [process] = svc_world.start(notify, log_level="DEBUG", pika_log_level="DEBUG")
    svc_world.publish(notify, {"type": "new_order", "id": "dbg-2"})
    wait_for(lambda: "acked" in lines_about(process.log(), "dbg-2"), "dbg-2 acked")
    assert process.stop() == 0
    log = process.log()
    assert lines_about(log, "dbg-2") == [
        "parsed new_order", "no claim (dedup off): processed", "work (0 ms)",
        "effect written (no done mark: dedup off)", "acked",
    ]
    assert "pika" in loggers(log)
