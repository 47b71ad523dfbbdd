"""nirvana.checker: the chaos proof's verdicts, one case per column (pure, no services)."""

from nirvana import checker


def test_every_id_processed_once_is_ok():
    row = checker.check("orders", ["a", "b", "b"], {"a": 1, "b": 1})
    assert row == checker.Row("orders", published=2, processed_once=2, lost=0, duplicated=0, unexpected=0,
                              dead_lettered=0, left_in_queue=0)
    assert row.ok


def test_an_id_processed_twice_is_duplicated_and_fails():
    row = checker.check("orders", ["a", "b"], {"a": 2, "b": 1})
    assert (row.processed_once, row.duplicated, row.ok) == (1, 1, False)


def test_an_id_never_processed_is_lost_unless_dead_lettered():
    assert checker.check("orders", ["a", "b"], {"a": 1}).lost == 1
    row = checker.check("orders", ["a", "b"], {"a": 1}, dead_lettered=["b"])
    assert (row.lost, row.dead_lettered, row.ok) == (0, 1, True)


def test_an_id_processed_but_never_published_is_unexpected():
    row = checker.check("orders", ["a"], {"a": 1, "ghost": 1, "zero": 0})
    assert (row.unexpected, row.ok) == (1, False)


def test_events_left_in_the_queue_fail_the_run():
    row = checker.check("orders", ["a"], {"a": 1}, left_in_queue=3)
    assert (row.left_in_queue, row.ok) == (3, False)


def test_render_is_a_table_with_the_verdict_last():
    text = checker.render([checker.check("orders", ["a", "b"], {"a": 1, "b": 1}),
                           checker.check("notify", ["a", "b"], {"a": 2, "b": 1})])
    header, orders, notify = text.splitlines()
    assert header.split("  ")[0] == "service" and header.endswith("verdict")
    assert orders.split() == ["orders", "2", "2", "0", "0", "0", "0", "0", "ok"]
    assert notify.split() == ["notify", "2", "1", "0", "1", "0", "0", "0", "FAILED"]


def test_nfc_and_nfd_spellings_of_an_id_are_one_id():
    # Given "café" published in NFC and in NFD and processed once (svc keys it in NFC)...
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    row = checker.check("orders", [nfc, nfd], {nfc: 1})
    # ... I expect one id, processed once, nothing lost or unexpected.
    assert (row.published, row.processed_once, row.lost, row.unexpected, row.ok) == (1, 1, 0, 0, True)
    # Two effects recorded under the two spellings (as svc did before it normalized) are a duplicate.
    assert checker.check("orders", [nfc, nfd], {nfc: 1, nfd: 1}).duplicated == 1
