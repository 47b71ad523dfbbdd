"""The learner's path through every chapter, checked without a kernel: each chapter explains its
terms in a concepts box, ends with what we saw, exercises, questions and further reading; every
``%load`` names a solution that exists, and the solutions notebook runs every solution (so strict
nbval checks each one); the glossary and the diagram the chapters link to are there."""

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest

from nirvana.paths import NOTEBOOKS, ROOT

CHAPTERS = sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = NOTEBOOKS / "solutions"


def test_every_chapter_is_checked():
    assert len(CHAPTERS) >= 11 and CHAPTERS[0] == "00_setup" and CHAPTERS[-1] == "10_read_back"


def markdown(name: str) -> list[str]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_a_chapter_has_concepts_what_we_saw_exercises_questions_and_reading(name):
    cells = markdown(name)
    text = "\n".join(cells)
    assert any("> **Concepts**" in cell for cell in cells), "no concepts box"
    for heading in ("## What we saw", "## Try it yourself", "## Questions", "## Further reading"):
        assert heading in text, f"no {heading!r}"
    assert "(GLOSSARY.md)" in text
    assert re.search(r"%load solutions/\w+\.py", text), "no exercise with a %load solution"


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_loaded_solution_exists_and_the_solutions_notebook_runs_it(name):
    runs = set(re.findall(r"%run (\w+\.py)", (SOLUTIONS / "solutions.ipynb").read_text(encoding="utf-8")))
    for path in re.findall(r"%load solutions/(\w+\.py)", "\n".join(markdown(name))):
        assert (SOLUTIONS / path).is_file(), f"{name} loads solutions/{path}, which does not exist"
        assert path in runs, f"solutions.ipynb does not run {path}"


def test_every_solution_file_is_run_by_the_solutions_notebook():
    runs = re.findall(r"%run (\w+\.py)", (SOLUTIONS / "solutions.ipynb").read_text(encoding="utf-8"))
    assert sorted(runs) == sorted(p.name for p in SOLUTIONS.glob("*.py"))


def test_the_glossary_defines_every_term_the_concepts_boxes_name():
    glossary = (NOTEBOOKS / "GLOSSARY.md").read_text(encoding="utf-8").lower()
    headings = set(re.findall(r"^### (.+)$", glossary, re.MULTILINE))
    for name in CHAPTERS:
        for cell in markdown(name):
            if "> **Concepts**" in cell:
                for term in re.findall(r"^> - \*\*([^*]+)\*\*", cell, re.MULTILINE):
                    term = re.sub(r" \(.*\)$", "", term.lower())
                    assert any(term == h or term in h or h in term for h in headings), \
                        f"{name}: {term!r} is not in the glossary"


def test_the_sequence_diagram_is_an_svg_with_every_step_and_crash_point():
    root = ElementTree.parse(ROOT / "assets" / "diagrams" / "one_event.svg").getroot()
    text = " ".join(" ".join(root.itertext()).split())
    for step in ("publish", "deliver", "claim", "work", "done mark + effect", "ack"):
        assert step in text, step
    for point in ("CRASH_AT=claimed", "CRASH_AT=done", "CLAIM_TTL"):
        assert point in text, point


def code(name: str) -> list[str]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_chapter_1_shows_the_event_and_the_publish_call_before_the_button():
    cells = code("01_consume_produce")
    call = next(i for i, cell in enumerate(cells) if 'event = {"type": "new_order", "id": "123"}' in cell
                and "publisher.publish(event" in cell)
    button = next(i for i, cell in enumerate(cells) if "publish_button.click()" in cell)
    assert call < button


@pytest.mark.parametrize("name, labels", [
    ("02_recovery", ["stop notify", "kill orders", "start both"]),
    ("03_idempotency", ["dedup on", "restart"]),
])
def test_the_plots_mark_the_steps_of_the_demo(name, labels):
    cells = code(name)
    marked = [label for label in labels if any(f'plots.Mark.now("{label}")' in cell for cell in cells)]
    assert marked == labels
    assert any("plots.plot_counters(" in cell and "marks=marks" in cell for cell in cells)


def test_the_diagrams_crash_point_b_sits_where_crash_at_claimed_kills():
    # CRASH_AT=claimed kills right after the claim is answered, before the work (svc/faults.py):
    # crash point B is drawn between the claim's answer and the work, and its row says so.
    root = ElementTree.parse(ROOT / "assets" / "diagrams" / "one_event.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    crashes = [c for c in root.iter(f"{ns}circle") if c.get("class") == "crash"]
    letters = [t for t in root.iter(f"{ns}text") if t.get("class") == "letter"]
    circles = {"".join(t.itertext()).strip(): float(c.get("cy")) for c, t in zip(crashes, letters, strict=True)}
    texts = ["".join(t.itertext()) for t in root.iter(f"{ns}text")]
    # replies are dashed paths "M x1,y1 L x2,y2"; the claim's answer is etcd's first (from the lifeline
    # furthest right, the first reply from there)
    replies = [tuple(float(v) for v in re.findall(r"[\d.]+", path.get("d"))[:2])
               for path in root.iter(f"{ns}path") if path.get("class") == "reply"]
    etcd_x = max(x for x, _ in replies)
    claim_answer = min(y for x, y in replies if x == etcd_x)
    work = next(float(r.get("y")) for r in root.iter(f"{ns}rect") if r.get("fill") == "#c8e6c9")
    assert claim_answer < circles["B"] - 9 and circles["B"] + 9 <= work, (claim_answer, circles["B"], work)
    row = next(text for text in texts if text.startswith("B "))
    assert "before the work" in row, row


STEPS = re.compile(r"The steps of `(?P<name>[\w.]+)` \(`(?P<path>[\w/]+\.py)`\), its own lines:\s*```python\n(?P<code>.*?)```",
                   re.DOTALL)


def _code_lines(text: str) -> list[str]:
    """Lines of code without indentation and trailing comments; comment-only lines dropped."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


@pytest.mark.parametrize("name, helpers", [
    ("05_crashes", ["outages.watch_claim"]),
    ("06_talk_design", ["designs.replicas_race", "designs.crash_in_flush_window"]),
    ("07_chaos", ["chaos.run", "checker.check"]),
    ("09_scale_out", ["scale.stream_with_faults"]),
])
def test_a_demo_shows_the_steps_of_its_helper_in_the_helpers_own_lines(name, helpers):
    # A one-line helper call hides what happens: the chapter shows the lines that matter, and each
    # line shown is the helper's own (so the chapter cannot drift from the code it runs).
    shown = {m["name"]: m for text in markdown(name) for m in STEPS.finditer(text)}
    assert sorted(shown) == sorted(helpers)
    for helper, match in shown.items():
        source = _code_lines((ROOT / match["path"]).read_text(encoding="utf-8"))
        missing = [line for line in _code_lines(match["code"]) if line not in source]
        assert missing == [], f"{name}: lines shown for {helper} that {match['path']} does not have: {missing}"


def test_the_chapters_texts_agree_with_what_the_kit_does():
    # chapter 0 counts the chapters there are
    words = {"three": 3, "nine": 9, "ten": 10, "eleven": 11}
    said = re.search(r"walks through it in\s+(\w+) chapters", "\n".join(markdown("00_setup")))
    assert said and words.get(said[1]) == len(CHAPTERS), said and said[1]
    # a kernel killed outright takes its services with it (the parent-death signal, nirvana/processes.py)
    box = next(cell for cell in markdown("02_recovery") if "> **Concepts**" in cell)
    assert "PR_SET_PDEATHSIG" in box and "keep running" not in box
    # WORK_MS is work per window (svc/faults.py), in every text that says what it is per
    texts = {name: "\n".join(markdown(name)) for name in CHAPTERS}
    texts["GLOSSARY.md"] = (NOTEBOOKS / "GLOSSARY.md").read_text(encoding="utf-8")
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, text in texts.items():
        for match in re.finditer(r"(simulated )?work per (\w+)", text):
            assert match[2] == "window", f"{name}: {match[0]!r}: WORK_MS is per window"
    # chapter 5 (c): dedup_unavailable counts every try, and the waiting orders are in orders' hands
    c = "\n".join(markdown("05_crashes"))
    assert "one per event per attempt" in c and "*ready* for" in c
