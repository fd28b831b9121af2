"""Plots: curves, reconstruction grids, stroke decompositions, high-resolution re-renders."""

import matplotlib.pyplot as plt
import pytest
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


def test_training_curve_draws_each_phase_from_where_the_previous_one_ended(tmp_path):
    points = [(0, 0, 0.09, "start"), (60, 10, 0.08, "imitation"), (120, 20, 0.07, "imitation"), (180, 30, 0.06, "A2C")]
    figure = plots.training_curve(points, tmp_path / "curve.png", baselines={"blank canvas": 0.1})
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert list(lines["imitation"].get_xdata()) == [0, 1, 2] and list(lines["A2C"].get_xdata()) == [2, 3]
    assert list(lines["A2C"].get_ydata()) == [0.07, 0.06] and list(lines["blank canvas"].get_ydata()) == [0.1, 0.1]
    with Image.open(tmp_path / "curve.png") as picture:
        assert picture.width > 100
    # Points without a phase are one line.
    single = plots.training_curve([(0, 0, 0.5), (30, 5, 0.4)])
    assert [line.get_label() for line in single.axes[0].get_lines()] == ["training"]
    with pytest.raises(ValueError, match="no points"):
        plots.training_curve([])
    with pytest.raises(ValueError, match=r"\(seconds, update, l2\[, phase\]\); got \(60, 0.5\)"):
        plots.training_curve([(60, 0.5)])
    plt.close("all")
