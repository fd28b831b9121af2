"""Test-wide settings.

The brush kernel is compiled with torch.compile by default, which costs ~20 s per process;
unit tests run it eagerly (identical arithmetic) and tests/test_brush.py checks the compiled
kernel against the eager one.
"""

import os
from pathlib import Path

import pytest
import torch

import spiral_ppl as sp

os.environ.setdefault("SPIRAL_PPL_COMPILE", "0")


@pytest.fixture
def data_root() -> Path:
    """The folder of real datasets, from SPIRAL_PPL_DATA; tests that need it skip without it."""
    root = os.environ.get("SPIRAL_PPL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("SPIRAL_PPL_DATA is not set to a folder of real datasets")
    return Path(root)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one intra-op thread: small tensors on a shared 2-core machine
    run far faster without threads waiting on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_stroke_program():
    """Two strokes on an 8x8 canvas with a 3x3 grid: 162 actions per step, 26,244 programs,
    small enough to enumerate exactly."""
    brush = sp.renderers.Brush(canvas_size=8, grid_size=3, sizes=(16,), pressure_levels=1, compile=False)
    return sp.programs.PaintProgram(brush, steps=2, pixel_scale=1.5)


@pytest.fixture(scope="module")
def planted16():
    """Three planted strokes on each of four 16x16 canvases, with the full paint action space."""
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=3)
    planted = {
        "flag": torch.ones(4, 3, dtype=torch.long),
        "end_point": torch.tensor([[15, 3, 12], [5, 10, 0], [12, 15, 3], [6, 9, 6]]),
        "control_point": torch.tensor([[5, 7, 0], [1, 14, 4], [8, 13, 7], [0, 10, 3]]),
        "brush_size": torch.tensor([[3, 2, 3]] * 4),
        "pressure": torch.tensor([[9, 9, 7]] * 4),
    }
    return prog, prog.render(planted)
