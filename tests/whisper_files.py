"""Whisper files read by the tests, safe while carbon is still creating one.

Whisper's format (graphite-project/whisper, ``whisper.py``): a 16-byte header ``!LLfL`` (aggregation,
maximum retention, xFilesFactor, number of archives), 12 bytes ``!LLL`` per archive (offset in the
file, seconds per point, points), then each archive's points of 12 bytes ``!Ld`` (timestamp, value).
``whisper.create`` opens the file, writes the header and then fills the points (zeros, fallocate or
a sparse seek): a file read in between is shorter than its header says. Such a file is one carbon
has not finished creating — it holds no point yet — never a broken one.

The ``READ_COMPLETE`` snippet says the same of a file read by the whisper library itself (under the
system python3, where carbon's whisper is), for tests that fetch through it.
"""

from __future__ import annotations

import struct
from pathlib import Path

HEADER, ARCHIVE, POINT = struct.Struct("!LLfL"), struct.Struct("!LLL"), struct.Struct("!Ld")

# Python for the system python3 (``whisper`` imported): complete(path) is False for a file carbon is
# still creating (its header unreadable or its last archive not all there), as first_archive's None.
READ_COMPLETE = """
import os, whisper
def complete(path):
    try:
        info = whisper.info(path)
    except (OSError, whisper.CorruptWhisperFile):
        return False
    last = info["archives"][-1]
    return os.path.getsize(path) >= last["offset"] + last["size"]
"""


def first_archive(path: Path) -> tuple[int, list[tuple[int, float]]] | None:
    """(seconds per point, [(timestamp, value) of every slot]) of a whisper file's first archive;
    None while the file is missing or shorter than its header declares (carbon creating it)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER.size:
        return None
    archives = HEADER.unpack_from(data)[3]
    if archives < 1 or len(data) < HEADER.size + ARCHIVE.size * archives:
        return None
    last_offset, _seconds, last_points = ARCHIVE.unpack_from(data, HEADER.size + ARCHIVE.size * (archives - 1))
    if len(data) < last_offset + POINT.size * last_points:
        return None
    offset, seconds, points = ARCHIVE.unpack_from(data, HEADER.size)
    return seconds, [POINT.unpack_from(data, offset + POINT.size * index) for index in range(points)]


def seconds_per_point(path: Path) -> int:
    """The resolution (seconds) of a whisper file's first archive. Raises AssertionError when the
    file is missing or carbon has not finished creating it."""
    archive = first_archive(path)
    assert archive is not None, f"{path}: no whisper file, or one carbon has not finished creating"
    return archive[0]


def nonzero_points(path: Path) -> list[tuple[int, float]]:
    """(timestamp, value) of every point of a whisper file's first archive that is neither empty nor
    0; [] for a file carbon has not finished creating (it holds none yet)."""
    archive = first_archive(path)
    return [(stamp, value) for stamp, value in (archive[1] if archive else []) if stamp and value]
