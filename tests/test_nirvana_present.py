"""nirvana.present: JupyterLab serves a copy of the chapters, so presenting leaves the checkout unmodified."""

import json

from nirvana import paths, present


def test_the_copy_has_the_chapters_their_styles_and_pictures(tmp_path):
    copied = present.prepare(tmp_path)
    chapters = sorted(p.name for p in paths.NOTEBOOKS.glob("*.ipynb"))
    assert copied[:len(chapters)] == chapters
    # what the chapters link to or %load is copied too, at the same relative path
    assert "GLOSSARY.md" in copied and "solutions/00a_addresses.py" in copied
    for name in copied:
        assert (tmp_path / "notebooks" / name).read_bytes() == (paths.NOTEBOOKS / name).read_bytes()
    for name in chapters:
        assert (tmp_path / "notebooks" / name).read_bytes() == (paths.NOTEBOOKS / name).read_bytes()
    assert (tmp_path / "notebooks" / "rise.css").exists()
    # the slideshow asks for <chapter>.css beside each chapter: there, not a 404 in its console
    for name in chapters:
        assert (tmp_path / "notebooks" / name.replace(".ipynb", ".css")).exists()
    # the chapters link ../assets/diagrams/...: the same relative path works inside the copy
    assert (tmp_path / "assets" / "diagrams" / "architecture.svg").exists()


def test_what_the_presenter_saved_is_kept_until_the_checkout_changes_or_fresh(tmp_path):
    present.prepare(tmp_path)
    chapter = sorted(paths.NOTEBOOKS.glob("*.ipynb"))[0].name
    saved = tmp_path / "notebooks" / chapter
    saved.write_text(json.dumps({"rehearsed": True}))
    # a second start keeps the presenter's copy
    assert present.prepare(tmp_path) == []
    assert json.loads(saved.read_text()) == {"rehearsed": True}
    # the checkout's chapter changed since (a git pull): copied again
    manifest = tmp_path / "notebooks" / present.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), chapter: "an older digest"}))
    assert present.prepare(tmp_path) == [chapter]
    # --fresh copies everything again
    saved.write_text("{}")
    assert chapter in present.prepare(tmp_path, fresh=True)
    assert saved.read_bytes() == (paths.NOTEBOOKS / chapter).read_bytes()


def test_lab_settings_start_a_chapters_kernel_and_keep_what_the_presenter_changed(tmp_path):
    settings = present.lab_settings(tmp_path)
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    assert json.loads(tracker.read_text()) == {"autoStartDefaultKernel": True}
    tracker.write_text('{"autoStartDefaultKernel": false}')
    present.lab_settings(tmp_path)
    assert json.loads(tracker.read_text()) == {"autoStartDefaultKernel": False}


def test_jupyterlab_starts_with_the_kits_server_config_that_patches_the_static_cache():
    # the patch of jupyter_server's static file cache (a 403 for a font in the slideshow) is loaded
    argv = present.lab_command(paths.ROOT, "127.0.0.1", 8888, open_browser=False)
    assert f"--config={present.SERVER_CONFIG}" in argv and present.SERVER_CONFIG.exists()
