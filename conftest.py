"""The README and the examples in `docs/` are tested by running them: see `tests/readme.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from readme import pytest_collect_file

__all__ = ["pytest_collect_file"]
