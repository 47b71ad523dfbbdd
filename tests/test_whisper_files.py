"""The tests' whisper reader on files carbon is still creating: every cut of a real whisper file
(made by Debian's whisper, the library carbon writes with) reads as "no points yet", never an error."""

import json
import subprocess

import pytest
from conftest import need
from whisper_files import READ_COMPLETE, first_archive, nonzero_points, seconds_per_point

SYSTEM_PYTHON = "/usr/bin/python3"   # carbon's whisper (python3-whisper) is the system python's
STAMP = 1_800_000_000                # a point written at this time, in the first archive

CREATE = """
import sys, whisper
whisper.create(sys.argv[1], [(1, 600), (60, 60)])   # the kit's two archives (assets/carbon), shorter
whisper.update(sys.argv[1], 3.0, int(sys.argv[2]))
"""


def system_whisper(script: str, *args: str) -> str:
    need("whisper for the system python3 (apt package python3-whisper)",
         subprocess.run([SYSTEM_PYTHON, "-c", "import whisper"], capture_output=True).returncode == 0)
    return subprocess.run([SYSTEM_PYTHON, "-c", script, *args], capture_output=True, text=True, timeout=30,
                          check=True).stdout


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> bytes:
    """A whole whisper file with one point (3.0 at STAMP), as carbon leaves it."""
    path = tmp_path_factory.mktemp("whisper") / "one.wsp"
    # whisper.update refuses a timestamp older than its retention: fake its clock through time.time
    system_whisper("import time; time.time = lambda: %d\n" % (STAMP + 1) + CREATE, str(path), str(STAMP))
    return path.read_bytes()


def cuts(size: int) -> list[int]:
    """Lengths of a file carbon is creating: empty, inside the header, the header and archive table
    only, part of the points, all but the last byte."""
    return [0, 1, 15, 16, 27, 28, 40, 400, size // 2, size - 12, size - 1]


def test_a_whole_file_reads_its_point_and_resolution(tmp_path, whole):
    path = tmp_path / "whole.wsp"
    path.write_bytes(whole)
    assert nonzero_points(path) == [(STAMP, 3.0)]
    assert seconds_per_point(path) == 1


def test_a_file_carbon_is_still_creating_has_no_points_yet_never_an_error(tmp_path, whole):
    for size in cuts(len(whole)):
        # Given the file as a read sees it while whisper.create writes it (its first `size` bytes)
        path = tmp_path / f"cut{size}.wsp"
        path.write_bytes(whole[:size])
        # I expect no points and no archive, not struct.error
        assert nonzero_points(path) == [], size
        assert first_archive(path) is None, size
    assert nonzero_points(tmp_path / "missing.wsp") == []


def test_the_whisper_library_read_says_the_same_of_every_cut(tmp_path, whole):
    paths = []
    for size in [*cuts(len(whole)), len(whole)]:
        paths.append(tmp_path / f"cut{size}.wsp")
        paths[-1].write_bytes(whole[:size])
    script = READ_COMPLETE + "import json, sys\nprint(json.dumps([complete(p) for p in sys.argv[1:]]))"
    assert json.loads(system_whisper(script, *map(str, paths))) == [False] * len(cuts(len(whole))) + [True]
