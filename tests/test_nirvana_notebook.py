"""nirvana.notebook: what makes a chapter look stale or broken on open, and the tidy step (pure logic)."""

import json

from nirvana.notebook import RISE_SETTINGS, WIDGET_VIEW, dumps, main, problems, tidy


def code(source, outputs=(), tags=()):
    metadata = {"slideshow": {"slide_type": "-"}, "execution": {"iopub.status.busy": "2026-11-27T23:53:06Z"}}
    if tags:
        metadata["tags"] = list(tags)
    return {"cell_type": "code", "execution_count": 1, "id": "c", "metadata": metadata,
            "outputs": list(outputs), "source": source}


def stream(text):
    return {"name": "stdout", "output_type": "stream", "text": text}


def widget_view():
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {WIDGET_VIEW: {"model_id": "x", "version_major": 2, "version_minor": 0},
                     "text/plain": "VBox(children=(HBox(children=(Label(value='orders'),)),))"}}


def svg_output():
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"image/svg+xml": "<svg/>", "text/plain": "<IPython.core.display.SVG object>"}}


def notebook(*cells):
    return {"cells": list(cells), "metadata": {"widgets": {"state": {}}}, "nbformat": 4, "nbformat_minor": 5}


FACT = code('print("orders_new_order_ok =", 1)', [stream("orders_new_order_ok = 1\n")])


def test_each_kind_that_looks_broken_on_open_is_named():
    # Given a ready line and a widget view saved, an SVG output, saved widget state
    nb = notebook(
        code('services.start("orders")\npanel', [stream("orders: ready, dedup off\n"), widget_view()],
             tags=["nbval-ignore-output"]),
        code('from IPython.display import SVG\nSVG(filename="../assets/diagrams/architecture.svg")', [svg_output()]),
        FACT,
    )
    found = "\n".join(problems(nb))
    # I expect each named
    assert "saved widget state" in found
    assert "orders: ready" in found
    assert "widget view saved" in found
    assert "SVG shown as output" in found and "SVG output saved" in found
    assert "slideshow settings" in found
    assert "execution timestamps" in found


def test_tidy_keeps_the_compared_facts_and_removes_the_rest():
    nb = notebook(
        code("panel", [stream("orders: ready, dedup off\n"), widget_view()], tags=["nbval-ignore-output"]),
        code('from IPython.display import SVG\nSVG(filename="../assets/diagrams/architecture.svg")', [svg_output()]),
        code("publisher", [widget_view()]),   # a widget in a compared cell: the view goes, the cell stays
        FACT,
    )
    tidied = tidy(nb)
    assert problems(tidied) == []
    panel, picture, publisher, fact = tidied["cells"]
    assert panel["outputs"] == [] and panel["source"] == "panel" and panel["execution_count"] == 1
    assert picture == {"cell_type": "markdown", "id": "c", "metadata": {"slideshow": {"slide_type": "-"}},
                       "source": ["![architecture](../assets/diagrams/architecture.svg)"]}
    assert publisher["outputs"] == []
    assert fact["outputs"] == [stream("orders_new_order_ok = 1\n")]
    assert "widgets" not in tidied["metadata"]
    assert tidied["metadata"]["rise"] == RISE_SETTINGS
    # the input is not changed, and a second tidy changes nothing
    assert nb["cells"][0]["outputs"] and dumps(tidy(tidied)) == dumps(tidied)


def test_rise_settings_of_the_notebook_are_kept_beside_the_kits():
    nb = notebook(FACT)
    nb["metadata"]["rise"] = {"header": "<b>talk</b>", "theme": "simple"}
    assert tidy(nb)["metadata"]["rise"] == {"header": "<b>talk</b>", **RISE_SETTINGS}


def test_command_line_tidies_checks_and_refuses_bad_arguments(tmp_path, capsys):
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(notebook(code("panel", [widget_view()], tags=["nbval-skip"]))))
    assert main(["check", str(path)]) == 1
    assert main(["tidy", str(path)]) == 0
    assert f"tidied {path}" in capsys.readouterr().out
    assert main(["check", str(path)]) == 0
    assert main(["tidy", str(tmp_path / "missing.ipynb")]) == 2
    assert main(["polish"]) == 2
    assert "usage:" in capsys.readouterr().err
