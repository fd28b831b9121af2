"""Plots: curves, reconstruction grids, stroke decompositions, high-resolution re-renders."""

import matplotlib.pyplot as plt
import torch
from PIL import Image

import spiral_ppl as sp
from spiral_ppl import plots


def two_strokes():
    brush = sp.renderers.Brush(canvas_size=32, grid_size=8)
    prog = sp.programs.PaintProgram(brush, steps=3)
    actions = {  # a full-pressure line along the top row, a jump, a line along the bottom row
        "flag": torch.tensor([[1, 0, 1]]),
        "end_point": torch.tensor([[7, 56, 63]]),
        "control_point": torch.tensor([[3, 0, 59]]),
        "brush_size": torch.tensor([[2, 0, 2]]),
        "pressure": torch.tensor([[9, 0, 9]]),
    }
    return brush, prog, actions


def test_stroke_colours_give_each_step_its_own_colour():
    _, prog, actions = two_strokes()
    pictures = plots.stroke_colours(prog, actions)
    palette = torch.tensor(plt.get_cmap("tab20").colors, dtype=torch.float32)
    assert pictures.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pictures[0, :, 0, 16], palette[0])  # step 0 owns the top row
    torch.testing.assert_close(pictures[0, :, 31, 16], palette[2])  # step 2 the bottom row
    assert pictures[0, :, 16].sum() == 0  # the jump left nothing


def test_figures_are_written(tmp_path):
    brush, prog, actions = two_strokes()
    plots.stroke_decomposition(prog, actions, tmp_path / "strokes.png")
    plots.high_resolution(brush, actions, scale=4, path=tmp_path / "high.png")
    target = prog.render(actions)
    result = sp.inference.Importance().infer(prog, target, sp.Budget(renders=20), seed=0)
    plots.plot_curves({"importance": result}, tmp_path / "curves.png", blank_l2=float(target.pow(2).mean()))
    plots.reconstruction_grid(target, {"importance": result.images}, tmp_path / "grid.png")
    for name in ("strokes", "high", "curves", "grid"):
        with Image.open(tmp_path / f"{name}.png") as picture:
            assert picture.width > 100 and picture.height > 100
    plt.close("all")
