"""The torch Brush alone: exact stroke geometry, width, opacity and softness, the compiled
kernel. What every paint engine must do is in tests/test_paint_renderers.py."""

import numpy as np
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.renderers.base import index_batch
from spiral_ppl.renderers.brush import _paint_every_pixel, _tiles_near_strokes
from spiral_ppl.squared_error import tiled_squared_error
from tests.paint_helpers import cell, distance_to_bezier, one_stroke, program


def hard_pen(**kwargs):
    """The brush with a one-pixel anti-aliased edge, width ``sizes[k]`` and opacity ``p``."""
    return sp.renderers.Brush(width_scale=1.0, softness=0.0, opacity_exponent=1.0, **kwargs)


@pytest.mark.parametrize(
    "start_cell, control_cell, end_cell",
    [((0, 0), (31, 0), (31, 31)), ((5, 20), (16, 16), (27, 12)), ((3, 28), (30, 30), (10, 2))],
)
def test_stroke_inks_pixels_near_the_curve_and_none_far_from_it(start_cell, control_cell, end_cell):
    brush = hard_pen(canvas_size=64, grid_size=32)
    # brush_size 2 is 4 px wide (radius 2); pressure 9 is opacity 1.
    image, distance, (mid_x, mid_y) = one_stroke(brush, start_cell, control_cell, end_cell, brush_size=2, pressure=9)
    radius = 2.0
    assert np.all(image[distance < radius - 0.55] > 0.99), "pixels on the curve must be fully inked"
    assert np.all(image[distance > radius + 0.55] == 0), "pixels far from the curve must stay blank"
    assert image[mid_y, mid_x] > 0.99


def test_a_control_point_at_the_midpoint_draws_a_straight_segment():
    # Grid points (23, 3), (21, 10), (19, 17) are collinear and evenly spaced: b = 0 up to rounding.
    brush = hard_pen()
    steps = [{"flag": 0, "end_point": cell(brush, 23, 3)},
             {"flag": 1, "end_point": cell(brush, 19, 17), "control_point": cell(brush, 21, 10), "brush_size": 1,
              "pressure": 9}]
    image = brush.render(program(brush, steps))[0, 0].numpy()
    assert np.isfinite(image).all()
    start, end = np.array([23.0, 3.0]) * 63 / 31, np.array([19.0, 17.0]) * 63 / 31
    distance = distance_to_bezier(start, (start + end) / 2, end, 64)
    assert np.all(image[distance < 0.45] > 0.99) and np.all(image[distance > 1.55] == 0)


@pytest.mark.parametrize("exponent", [1.0, 0.6])
def test_opacity_is_pressure_to_the_exponent(exponent):
    brush = sp.renderers.Brush(width_scale=1.0, softness=0.0, opacity_exponent=exponent)
    base = {"flag": 1, "end_point": cell(brush, 31, 31), "control_point": cell(brush, 0, 31), "brush_size": 2}
    ink = [brush.render(program(brush, [dict(base, pressure=level)])).sum().item() for level in range(10)]
    assert all(later > earlier for earlier, later in zip(ink, ink[1:]))
    assert ink[-1] == pytest.approx(10**exponent * ink[0], rel=1e-4)  # opacity ((level + 1) / 10) ** exponent


def test_hard_pen_width_is_the_size():
    brush = hard_pen()
    widths = []
    for size in range(len(brush.sizes)):
        stroke = {"flag": 1, "end_point": cell(brush, 31, 16), "control_point": cell(brush, 15, 16),
                  "brush_size": size, "pressure": 9}
        jump = {"flag": 0, "end_point": cell(brush, 0, 16)}
        image = brush.render(program(brush, [jump, stroke]))[0, 0]
        widths.append(image[:, 32].sum().item())  # ink across the line, perpendicular to it
    assert all(later > earlier for earlier, later in zip(widths, widths[1:]))
    for width, size in zip(widths, brush.sizes):
        assert width == pytest.approx(size, abs=1.0)  # width_scale 1: size is width in pixels


def test_strokes_composite_over_earlier_ones():
    brush = hard_pen()
    half = {"flag": 1, "end_point": cell(brush, 31, 0), "control_point": cell(brush, 16, 0), "brush_size": 3,
            "pressure": 4}
    back = dict(half, end_point=cell(brush, 0, 0))
    image = brush.render(program(brush, [half, back]))[0, 0]
    assert image[1, 32].item() == pytest.approx(1 - 0.5 * 0.5)  # two layers of opacity 0.5


def test_compiled_kernel_matches_eager():
    eager = sp.renderers.Brush(compile=False, color=True)
    compiled = sp.renderers.Brush(compile=True, color=True)
    generator = torch.Generator().manual_seed(2)
    actions = {c.name: torch.randint(0, c.size, (32, 4), generator=generator) for c in eager.action_space}
    difference = (compiled.render(actions) - eager.render(actions)).abs()
    # Fused kernels round cube roots differently; where the cubic is ill-conditioned (pixels
    # right at a stroke's end) that moves the edge by up to ~0.1 px, and nowhere else.
    assert difference.max() < 0.15
    assert (difference > 1e-3).float().mean() < 1e-3


def paint_every_pixel(brush, state, action):
    """One stroke per canvas of ``state`` by the reference that evaluates every pixel, compiled
    when ``brush`` compiles (the two modes round cube roots differently)."""
    stroke, _ = brush._stroke(state.position, action, state.canvas.device)
    paint = brush._kernel(_paint_every_pixel, state.canvas.shape[0])
    return paint(state.canvas, None, *stroke, *brush._pixels(state.canvas.device))


def random_strokes(brush, count, generator, on_the_border=False):
    """Random actions of every size, pressure and colour, flags mixed; ``on_the_border``:
    end and control points on the grid's outer rows and columns."""
    action = {c.name: torch.randint(0, c.size, (count,), generator=generator) for c in brush.action_space}
    if on_the_border:
        last = brush.grid_size - 1
        for name in ("end_point", "control_point"):
            along = torch.randint(0, brush.grid_size, (count,), generator=generator)
            across = torch.randint(0, 2, (count,), generator=generator) * last
            x, y = torch.where(torch.rand(count, generator=generator) < 0.5, along, across), along.flip(0)
            y = torch.where(x == along, across, y)
            action[name] = y * brush.grid_size + x
    return action


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("look", [{}, sp.renderers.DRY_BRUSH_LOOK], ids=["hard-pen", "dry-brush"])
def test_painting_tiles_gives_the_picture_of_painting_every_pixel(compile, look):
    generator = torch.Generator().manual_seed(5)
    for canvas_size, grid_size in [(16, 8), (28, 14), (31, 7), (64, 32), (128, 32)]:
        brush = sp.renderers.Brush(canvas_size, grid_size, color=True, compile=compile, **look)
        state = brush.initial_state(300)
        for step in range(4):  # strokes from wherever the last ones ended, over earlier ink
            action = random_strokes(brush, 300, generator, on_the_border=step % 2 == 1)
            expected = paint_every_pixel(brush, state, action)
            state = brush.step(state, action)
            difference = (state.canvas - expected).abs().max().item()
            assert difference < 1e-5, f"{canvas_size}x{canvas_size}, step {step}: {difference}"
        assert (state.canvas != brush.initial_state(1).canvas).float().mean() > 0.2  # the strokes did ink


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_painting_tiles_scores_what_painting_every_pixel_paints(compile):
    brush = sp.renderers.Brush(64, 32, color=True, compile=compile)
    generator = torch.Generator().manual_seed(6)
    state = brush.step(brush.initial_state(256), random_strokes(brush, 256, generator))
    rows, action = torch.randint(0, 256, (512,), generator=generator), random_strokes(brush, 512, generator)
    targets = torch.rand(4, 3, 64, 64, generator=generator)
    for selected in (rows, None):
        before = state if selected is None else index_batch(state, selected)
        step_action = action if selected is not None else {name: value[:256] for name, value in action.items()}
        expected = paint_every_pixel(brush, before, step_action)
        painted, error = brush.step_and_compare(state, step_action, targets, selected)
        assert (painted.canvas - expected).abs().max().item() < 1e-5
        torch.testing.assert_close(error, tiled_squared_error(expected, targets), rtol=1e-5, atol=1e-5)


def test_a_stroke_is_evaluated_only_on_the_tiles_it_may_ink():
    brush = hard_pen(canvas_size=64, grid_size=32)
    tiles = brush._tiles(torch.device("cpu"))
    # A straight stroke from pixel (20.3, 20.3) to (24.4, 20.3) of radius 1 and a 1-pixel edge
    # inks pixels 19..25 of rows 19..21: in the 8x8 tiles of row 2, columns 2 and 3.
    start, end = brush.grid_to_pixels(torch.tensor([[cell(brush, 10, 10)], [cell(brush, 12, 10)]]))
    control, radius, edge = (start + end) / 2, torch.tensor([1.0]), torch.tensor([1.0])
    near = _tiles_near_strokes(start, control, end, radius, edge, torch.tensor([0.5]), tiles.first, tiles.last)
    assert near.view(8, 8).nonzero().tolist() == [[2, 2], [2, 3]]
    jump = _tiles_near_strokes(start, control, end, radius, edge, torch.tensor([0.0]), tiles.first, tiles.last)
    assert not jump.any()


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_step_and_compare_paints_the_selected_canvases_and_scores_them(compile):
    brush, eager = sp.renderers.Brush(compile=compile, color=True), sp.renderers.Brush(compile=False, color=True)
    generator = torch.Generator().manual_seed(4)

    def random_action(count):
        return {c.name: torch.randint(0, c.size, (count,), generator=generator) for c in brush.action_space}

    state = eager.step(eager.initial_state(6), random_action(6))  # six different canvases
    rows, action = torch.tensor([5, 5, 0, 2, 3, 1]), random_action(6)
    targets = torch.rand(3, 3, 64, 64, generator=generator)  # canvas r is compared with target r % 3
    for selected in (rows, None):
        # What any renderer does by default: select the rows, paint, then compare.
        expected, expected_error = sp.renderers.Renderer.step_and_compare(eager, state, action, targets, selected)
        reference = eager.step(state if selected is None else index_batch(state, selected), action)
        torch.testing.assert_close(expected.canvas, reference.canvas)
        torch.testing.assert_close(expected_error, (reference.canvas - targets.repeat(2, 1, 1, 1)).pow(2).sum((1, 2, 3)))
        # The brush does it in one kernel.
        painted, error = brush.step_and_compare(state, action, targets, selected)
        assert torch.equal(painted.position, expected.position)
        difference = (painted.canvas - expected.canvas).abs()
        assert difference.max() < 0.15 and (difference > 1e-3).float().mean() < 1e-3  # as compiled against eager
        torch.testing.assert_close(error, (painted.canvas - targets.repeat(2, 1, 1, 1)).pow(2).sum((1, 2, 3)))
    # The fused kernel and the default path refuse targets of another shape, or that cannot tile the canvases.
    fused, default = brush.step_and_compare, lambda *args: sp.renderers.Renderer.step_and_compare(eager, *args)
    for step_and_compare in (fused, default):
        with pytest.raises(ValueError, match=r"targets must have shape \(M, 3, 64, 64\)"):
            step_and_compare(state, action, targets[:, :, :32], rows)
        with pytest.raises(ValueError, match="cannot be tiled over 4 targets"):
            step_and_compare(state, action, targets[[0, 1, 2, 0]], rows)


def test_soft_edge_ramps_linearly_around_the_radius():
    brush = sp.renderers.Brush(softness=1.5, width_scale=1.4, opacity_exponent=0.6)
    stroke = {"flag": 1, "end_point": cell(brush, 31, 16), "control_point": cell(brush, 15, 16), "brush_size": 4,
              "pressure": 4}
    jump = {"flag": 0, "end_point": cell(brush, 0, 16)}
    column = brush.render(program(brush, [jump, stroke]))[0, 0, :, 32].double()
    radius, edge, opacity = 12 * 1.4 / 2, 1 + 1.5 * 12 * 1.4 / 2, 0.5**0.6
    distance = (torch.arange(64, dtype=torch.float64) - 16 * 63 / 31).abs()
    expected = opacity * ((radius - distance) / edge + 0.5).clamp(0, 1)
    torch.testing.assert_close(column, expected, rtol=0, atol=1e-5)


def test_dry_brush_look_keeps_the_width_at_width_scale_times_size():
    brush = sp.renderers.Brush(**sp.renderers.DRY_BRUSH_LOOK)
    for size_index, size in enumerate(brush.sizes):
        stroke = {"flag": 1, "end_point": cell(brush, 31, 16), "control_point": cell(brush, 15, 16),
                  "brush_size": size_index, "pressure": 9}
        jump = {"flag": 0, "end_point": cell(brush, 0, 16)}
        image = brush.render(program(brush, [jump, stroke]))[0, 0]
        # A soft edge centred on the radius keeps the ink across the line at the stroke's width.
        assert image[:, 32].sum().item() == pytest.approx(brush.width_scale * size, rel=0.05, abs=0.1)


def test_brush_specific_constructor_checks():
    with pytest.raises(ValueError, match="softness"):
        sp.renderers.Brush(softness=-1)
    with pytest.raises(ValueError, match="opacity_exponent"):
        sp.renderers.Brush(opacity_exponent=0)
    assert sp.renderers.Brush(softness=0.5).with_canvas_size(128).softness == 0.5


def test_brush_settings_of_the_wrong_kind_are_refused_not_coerced():
    with pytest.raises(ValueError, match="sizes must be a non-empty list of positive numbers"):
        sp.renderers.Brush(16, 8, sizes=5)
    with pytest.raises(ValueError, match="color must be true or false, got 'false'"):
        sp.renderers.Brush(16, 8, color="false")  # a string from a configuration file is not True
    assert sp.renderers.Brush(16, 8, sizes=[2, 4.5]).sizes == (2.0, 4.5)
