"""The test run's own hooks, for every run: pytest loads this rootdir conftest.py whatever it collects
(tests/, notebooks/, or a single chapter), where tests/conftest.py is loaded only for tests/.

The hooks themselves, and why they must be here, are in tests/run_layout.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).with_name("tests")))   # as pytest does for tests/conftest.py

from run_layout import (  # noqa: E402, F401 (pytest finds the hooks by their names here)
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_unconfigure,
)
