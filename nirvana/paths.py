"""The kit's folders. Nothing is created here: callers make what they write into."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
NOTEBOOKS = ROOT / "notebooks"


def state_dir() -> Path:
    """The one git-ignored folder that holds the stack's data, pid files and logs.

    NIRVANA_STATE moves it (tests and a second checkout use that); default ``<root>/state``.
    """
    return Path(os.environ.get("NIRVANA_STATE") or ROOT / "state").resolve()


def log_dir() -> Path:
    return state_dir() / "logs"
