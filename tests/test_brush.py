"""The torch Brush: geometry of strokes, opacity, width, jumps, batching, bad input."""

import math

import numpy as np
import pytest
import torch

import spiral_ppl as sp


def program(brush, steps):
    """Actions ``{name: LongTensor[1, T]}`` from a list of per-step dicts (missing -> 0)."""
    return {c.name: torch.tensor([[step.get(c.name, 0) for step in steps]]) for c in brush.action_space}


def cell(brush, x, y):
    return y * brush.grid_size + x


def distance_to_bezier(start, control, end, size):
    """Brute-force distance of every pixel centre to a densely sampled quadratic Bezier."""
    tau = np.linspace(0, 1, 20001)[:, None]
    curve = (1 - tau) ** 2 * start + 2 * (1 - tau) * tau * control + tau**2 * end
    ys, xs = np.mgrid[0:size, 0:size]
    pixels = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    distances = np.full(len(pixels), np.inf)
    for chunk in np.array_split(np.arange(len(pixels)), 8):
        diff = pixels[chunk, None, :] - curve[None]
        distances[chunk] = np.sqrt((diff**2).sum(-1)).min(-1)
    return distances.reshape(size, size)


@pytest.mark.parametrize(
    "start_cell, control_cell, end_cell",
    [((0, 0), (31, 0), (31, 31)), ((5, 20), (16, 16), (27, 12)), ((3, 28), (30, 30), (10, 2))],
)
def test_stroke_inks_pixels_near_the_curve_and_none_far_from_it(start_cell, control_cell, end_cell):
    brush = sp.renderers.Brush(canvas_size=64, grid_size=32)
    steps = [
        {"flag": 0, "end_point": cell(brush, *start_cell)},  # jump to the start
        {
            "flag": 1,
            "end_point": cell(brush, *end_cell),
            "control_point": cell(brush, *control_cell),
            "brush_size": 2,  # width 4 px, radius 2
            "pressure": 9,
        },
    ]
    image = brush.render(program(brush, steps))[0, 0].numpy()
    spacing = 63 / 31
    start, control, end = (np.array(p, dtype=np.float64) * spacing for p in (start_cell, control_cell, end_cell))
    distance = distance_to_bezier(start, control, end, 64)
    radius = 2.0
    assert np.all(image[distance < radius - 0.55] > 0.99), "pixels on the curve must be fully inked"
    assert np.all(image[distance > radius + 0.55] == 0), "pixels far from the curve must stay blank"
    # The curve passes through its midpoint B(1/2) = (start + 2 control + end) / 4.
    mid_x, mid_y = np.round((start + 2 * control + end) / 4).astype(int)
    assert image[mid_y, mid_x] > 0.99


def test_a_control_point_at_the_midpoint_draws_a_straight_segment():
    # Grid points (23, 3), (21, 10), (19, 17) are collinear and evenly spaced: b = 0 up to rounding.
    brush = sp.renderers.Brush()
    steps = [{"flag": 0, "end_point": cell(brush, 23, 3)},
             {"flag": 1, "end_point": cell(brush, 19, 17), "control_point": cell(brush, 21, 10), "brush_size": 1,
              "pressure": 9}]
    image = brush.render(program(brush, steps))[0, 0].numpy()
    assert np.isfinite(image).all()
    start, end = np.array([23.0, 3.0]) * 63 / 31, np.array([19.0, 17.0]) * 63 / 31
    distance = distance_to_bezier(start, (start + end) / 2, end, 64)
    assert np.all(image[distance < 0.45] > 0.99) and np.all(image[distance > 1.55] == 0)


def test_brush_starts_at_the_upper_left_corner():
    brush = sp.renderers.Brush()
    stroke = program(brush, [{"flag": 1, "end_point": cell(brush, 31, 0), "control_point": 8, "pressure": 9}])
    image = brush.render(stroke)[0, 0]
    assert image[0, 0] > 0.99 and image[0, 63] > 0.99
    assert image[10:].sum() == 0


def test_jump_moves_the_brush_and_leaves_no_ink():
    brush = sp.renderers.Brush()
    jump = {"flag": 0, "end_point": cell(brush, 20, 20), "control_point": cell(brush, 31, 0), "pressure": 9}
    assert brush.render(program(brush, [jump]))[0].abs().sum() == 0
    # The next stroke starts where the jump ended, not at the corner.
    dot = {"flag": 1, "end_point": cell(brush, 20, 20), "control_point": cell(brush, 20, 20), "pressure": 9}
    image = brush.render(program(brush, [jump, dot]))[0, 0]
    ys, xs = torch.nonzero(image > 0, as_tuple=True)
    centre = 20 * 63 / 31
    assert abs(xs.float().mean() - centre) < 0.5 and abs(ys.float().mean() - centre) < 0.5
    assert image[0, 0] == 0


def test_more_pressure_means_more_ink():
    brush = sp.renderers.Brush()
    base = {"flag": 1, "end_point": cell(brush, 31, 31), "control_point": cell(brush, 0, 31), "brush_size": 2}
    ink = [brush.render(program(brush, [dict(base, pressure=level)])).sum().item() for level in range(10)]
    assert all(later > earlier for earlier, later in zip(ink, ink[1:]))
    assert ink[-1] == pytest.approx(10 * ink[0], rel=1e-4)  # opacity is (level + 1) / 10


def test_larger_size_means_a_wider_line():
    brush = sp.renderers.Brush()
    widths = []
    for size in range(len(brush.sizes)):
        stroke = {"flag": 1, "end_point": cell(brush, 31, 16), "control_point": cell(brush, 15, 16),
                  "brush_size": size, "pressure": 9}
        jump = {"flag": 0, "end_point": cell(brush, 0, 16)}
        image = brush.render(program(brush, [jump, stroke]))[0, 0]
        widths.append(image[:, 32].sum().item())  # ink across the line, perpendicular to it
    assert all(later > earlier for earlier, later in zip(widths, widths[1:]))
    for width, size in zip(widths, brush.sizes):
        assert width == pytest.approx(size, abs=1.0)  # default width_scale: size is width in pixels


def test_a_batch_equals_its_items_rendered_one_by_one():
    brush = sp.renderers.Brush(color=True)
    generator = torch.Generator().manual_seed(0)
    actions = {c.name: torch.randint(0, c.size, (6, 5), generator=generator) for c in brush.action_space}
    batch = brush.render(actions)
    for item in range(6):
        single = brush.render({name: value[item : item + 1] for name, value in actions.items()})
        torch.testing.assert_close(batch[item : item + 1], single, rtol=0, atol=1e-6)


def test_colour_strokes_paint_their_bin_colour():
    brush = sp.renderers.Brush(color=True)
    assert [c.name for c in brush.action_space][-3:] == ["red", "green", "blue"]
    stroke = {"flag": 1, "end_point": cell(brush, 31, 0), "control_point": cell(brush, 16, 0),
              "brush_size": 3, "pressure": 9, "red": 19, "green": 0, "blue": 10}
    image = brush.render(program(brush, [stroke]))[0]
    assert image.shape == (3, 64, 64)
    torch.testing.assert_close(image[:, 1, 32], torch.tensor([1.0, 0.0, 10 / 19]))
    assert image[:, 40:].sum() == 0


def test_strokes_composite_over_earlier_ones():
    brush = sp.renderers.Brush()
    half = {"flag": 1, "end_point": cell(brush, 31, 0), "control_point": cell(brush, 16, 0), "brush_size": 3,
            "pressure": 4}
    back = dict(half, end_point=cell(brush, 0, 0))
    image = brush.render(program(brush, [half, back]))[0, 0]
    assert image[1, 32].item() == pytest.approx(1 - 0.5 * 0.5)  # two layers of opacity 0.5


def test_high_resolution_rerender_matches_the_low_resolution_picture():
    brush = sp.renderers.Brush(canvas_size=64)
    generator = torch.Generator().manual_seed(1)
    actions = {c.name: torch.randint(0, c.size, (4, 6), generator=generator) for c in brush.action_space}
    actions["brush_size"] = actions["brush_size"].clamp(min=2)
    low = brush.render(actions)
    high = brush.with_canvas_size(256).render(actions)
    assert high.shape == (4, 1, 256, 256)
    pooled = torch.nn.functional.avg_pool2d(high, 4)
    assert (pooled - low).pow(2).mean() < 0.02 * low.pow(2).mean() + 1e-3


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


def test_canvases_stay_in_the_unit_interval():
    brush = sp.renderers.Brush(color=True, background=(0.2, 0.5, 1.0))
    generator = torch.Generator().manual_seed(3)
    actions = {c.name: torch.randint(0, c.size, (500, 20), generator=generator) for c in brush.action_space}
    images = brush.render(actions)
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()


class TestBadInput:
    def setup_method(self):
        self.brush = sp.renderers.Brush()
        self.actions = {c.name: torch.zeros(2, 3, dtype=torch.long) for c in self.brush.action_space}

    def test_float_actions(self):
        with pytest.raises(TypeError, match="integer dtype"):
            self.brush.render(dict(self.actions, pressure=torch.zeros(2, 3)))

    def test_out_of_range(self):
        with pytest.raises(ValueError, match=r"'end_point' must lie in \[0, 1023\]"):
            self.brush.render(dict(self.actions, end_point=torch.full((2, 3), 1024)))
        with pytest.raises(ValueError, match="must lie in"):
            self.brush.render(dict(self.actions, flag=torch.full((2, 3), -1)))

    def test_unknown_and_missing_components(self):
        with pytest.raises(ValueError, match=r"unknown: \['colour'\]"):
            self.brush.render(dict(self.actions, colour=torch.zeros(2, 3, dtype=torch.long)))
        incomplete = dict(self.actions)
        del incomplete["pressure"]
        with pytest.raises(ValueError, match=r"missing: \['pressure'\]"):
            self.brush.render(incomplete)

    def test_shapes(self):
        with pytest.raises(ValueError, match="same shape"):
            self.brush.render(dict(self.actions, flag=torch.zeros(2, 4, dtype=torch.long)))
        with pytest.raises(ValueError, match=r"\(batch, steps\)"):
            self.brush.render({name: value[0] for name, value in self.actions.items()})
        with pytest.raises(ValueError, match="empty batch"):
            self.brush.render({name: value[:0] for name, value in self.actions.items()})
        with pytest.raises(TypeError, match="mapping"):
            self.brush.render([1, 2, 3])

    def test_constructor(self):
        with pytest.raises(ValueError, match="grid_size"):
            sp.renderers.Brush(canvas_size=16, grid_size=32)
        with pytest.raises(ValueError, match="sizes"):
            sp.renderers.Brush(sizes=[1, -2])
        with pytest.raises(ValueError, match="background"):
            sp.renderers.Brush(background=2.0)
        with pytest.raises(ValueError, match="canvas_size"):
            sp.renderers.Brush(canvas_size=math.pi)
