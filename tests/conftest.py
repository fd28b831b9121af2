"""Test-wide settings.

The brush kernel is compiled with torch.compile by default, which costs ~20 s per process;
unit tests run it eagerly (identical arithmetic) and tests/test_brush.py checks the compiled
kernel against the eager one.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("SPIRAL_PPL_COMPILE", "0")


@pytest.fixture
def data_root() -> Path:
    """The folder of real datasets, from SPIRAL_PPL_DATA; tests that need it skip without it."""
    root = os.environ.get("SPIRAL_PPL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("SPIRAL_PPL_DATA is not set to a folder of real datasets")
    return Path(root)
