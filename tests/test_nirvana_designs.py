"""nirvana.designs: the pure counting behind chapter 6's table (the scenarios run in the notebook)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from nirvana import designs  # noqa: E402


def test_double_effects_count_processings_beyond_the_first():
    assert designs.double_effects({"a": 2, "b": 1, "c": 3}, ["a", "b", "c"]) == 3
    # An id never processed is lost, not doubled; ids outside the run do not count.
    assert designs.double_effects({"a": 1, "z": 5}, ["a", "b"]) == 0


def test_outcome_sums_what_was_processed_for_the_runs_ids():
    got = designs.outcome("talk", "race", 4, ["a", "b"], {"a": 2, "b": 2, "other": 7})
    assert got == designs.Outcome("talk", "race", published=4, ids=2, processed=4, double=2)


def test_table_has_one_row_per_outcome_with_aligned_columns():
    text = designs.table([designs.Outcome("talk", "race", 40, 20, 40, 20),
                          designs.Outcome("claims", "race", 40, 20, 20, 0)])
    lines = text.splitlines()
    assert lines[0].split() == ["scenario", "design", "published", "ids", "processed", "double", "effects"]
    assert lines[1].split() == ["race", "talk", "40", "20", "40", "20"]
    assert lines[2].split() == ["race", "claims", "40", "20", "20", "0"]
    assert len({len(line) for line in lines}) == 1


def test_the_chart_has_a_bar_per_design_and_scenario_labelled_with_its_count():
    fig = designs.plot_double_effects([designs.Outcome("talk", "race", 40, 20, 40, 20),
                                       designs.Outcome("claims", "race", 40, 20, 20, 0),
                                       designs.Outcome("talk", "crash", 1, 1, 2, 1),
                                       designs.Outcome("claims", "crash", 1, 1, 1, 0)])
    [ax] = fig.axes
    assert sorted(bar.get_height() for bar in ax.patches) == [0, 0, 1, 20]
    assert sorted(text.get_text() for text in ax.texts) == ["0", "0", "1", "20"]


def test_an_unknown_design_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match="use one of talk, claims"):
        designs.replicas_race("memory")
