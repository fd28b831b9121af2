"""What every paint engine must do with the paper's action space: one suite, run on the torch
Brush and on libmypaint (MyPaint with its default preset, classic/dry_brush).

libmypaint's dry brush is textured: its dabs are soft (hardness 0.2) and scatter around the
pointer more as pressure grows. Where the Brush gets exact bounds, MyPaint gets bounds with a
margin of a few pixels and checks on mean ink; each is stated where it is used.
"""

import math

import numpy as np
import pytest
import torch

import spiral_ppl as sp
from tests.paint_helpers import cell, one_stroke, program, random_programs

ENGINES = {"brush": sp.renderers.Brush, "mypaint": sp.renderers.MyPaint}


@pytest.fixture(params=sorted(ENGINES))
def engine(request):
    """A paint renderer class: every test below runs once per engine."""
    return ENGINES[request.param]


def reach(renderer, radius, pressure):
    """How far from the curve a stroke may leave ink, in pixels."""
    if isinstance(renderer, sp.renderers.Brush):
        return radius + (1 + renderer.softness * radius) / 2  # the soft edge, centred on the radius
    # dry_brush scatters its dabs around the pointer (offset_by_random = 1.4 * pressure radii)
    # and jitters their radius; at pressure 0.5 ink stays within 4 radii (measured: 3.5).
    assert pressure <= 0.5
    return 4 * radius + 1


@pytest.mark.parametrize(
    "start_cell, control_cell, end_cell",
    [((0, 0), (31, 0), (31, 31)), ((5, 20), (16, 16), (27, 12)), ((3, 28), (30, 30), (10, 2))],
)
def test_stroke_inks_pixels_near_the_curve_and_none_far_from_it(engine, start_cell, control_cell, end_cell):
    renderer = engine(canvas_size=64, grid_size=32)
    image, distance, (mid_x, mid_y) = one_stroke(renderer, start_cell, control_cell, end_cell, brush_size=2,
                                                 pressure=4)  # pressure 0.5
    radius = float(renderer.stroke_radius(torch.tensor(2)))
    on_curve = image[distance < 0.5]
    assert on_curve.mean() > 0.45, "the curve itself is inked at about the stroke's opacity (pressure 0.5)"
    assert on_curve.min() > 0.1, "no gap along the curve"
    assert np.all(image[distance > reach(renderer, radius, 0.5)] == 0), "pixels far from the curve stay blank"
    assert image[mid_y, mid_x] > 0.3


def test_brush_starts_at_the_upper_left_corner(engine):
    renderer = engine()
    stroke = {"flag": 1, "end_point": cell(renderer, 31, 0), "control_point": cell(renderer, 8, 0),
              "brush_size": 2, "pressure": 4}
    image = renderer.render(program(renderer, [stroke]))[0, 0]
    assert image[:3, :3].max() > 0.4 and image[:3, -3:].max() > 0.4  # pressure 0.5
    assert image[12:].sum() == 0


def test_jump_moves_the_brush_and_leaves_no_ink(engine):
    renderer = engine()
    jump = {"flag": 0, "end_point": cell(renderer, 20, 20), "control_point": cell(renderer, 31, 0), "pressure": 9,
            "brush_size": 3}
    assert renderer.render(program(renderer, [jump]))[0].abs().sum() == 0
    # The next stroke starts where the jump ended, not at the corner.
    dash = {"flag": 1, "end_point": cell(renderer, 22, 20), "control_point": cell(renderer, 21, 20), "pressure": 2,
            "brush_size": 2}
    image = renderer.render(program(renderer, [jump, dash]))[0, 0]
    ys, xs = torch.nonzero(image > 0, as_tuple=True)
    weights = image[ys, xs]
    centre_x, centre_y = 21 * 63 / 31, 20 * 63 / 31
    assert abs((xs * weights).sum() / weights.sum() - centre_x) < 1.0
    assert abs((ys * weights).sum() / weights.sum() - centre_y) < 1.0
    assert image[:10, :10].sum() == 0


def test_more_pressure_means_more_ink(engine):
    renderer = engine()
    base = {"flag": 1, "end_point": cell(renderer, 31, 31), "control_point": cell(renderer, 0, 31), "brush_size": 2}
    ink = [renderer.render(program(renderer, [dict(base, pressure=level)])).sum().item() for level in range(10)]
    assert all(later > earlier for earlier, later in zip(ink, ink[1:]))
    assert ink[-1] > 2 * ink[0]


def test_larger_size_means_a_wider_line(engine):
    renderer = engine()
    widths = []
    for size in range(len(renderer.sizes)):
        stroke = {"flag": 1, "end_point": cell(renderer, 31, 16), "control_point": cell(renderer, 15, 16),
                  "brush_size": size, "pressure": 4}
        jump = {"flag": 0, "end_point": cell(renderer, 0, 16)}
        image = renderer.render(program(renderer, [jump, stroke]))[0, 0]
        widths.append(image[:, 16:48].sum().item() / 32)  # ink across the line, perpendicular to it
    assert all(later > earlier for earlier, later in zip(widths, widths[1:]))


def test_a_batch_equals_its_items_rendered_one_by_one(engine):
    renderer = engine(color=True)
    actions = random_programs(renderer, 6, 5, seed=0)
    batch = renderer.render(actions)
    for item in range(6):
        single = renderer.render({name: value[item : item + 1] for name, value in actions.items()})
        torch.testing.assert_close(batch[item : item + 1], single, rtol=0, atol=1e-6)


def test_a_program_rendered_twice_gives_the_same_image(engine):
    renderer = engine()
    actions = random_programs(renderer, 4, 8, seed=4)
    actions["pressure"][:] = 9  # full pressure: the dry brush scatters its dabs at random most
    first = renderer.render(actions)
    assert first.sum() > 0
    torch.testing.assert_close(renderer.render(actions), first, rtol=0, atol=0)


def test_stepping_through_a_program_gives_its_render(engine):
    renderer = engine(color=True, background=(0.2, 0.5, 1.0))
    actions = random_programs(renderer, 3, 6, seed=5)
    state = renderer.initial_state(3)
    for t in range(6):
        state = renderer.step(state, {name: value[:, t] for name, value in actions.items()})
    torch.testing.assert_close(renderer.canvas(state), renderer.render(actions), rtol=0, atol=1e-6)


def test_colour_strokes_paint_their_bin_colour(engine):
    renderer = engine(color=True)
    assert [c.name for c in renderer.action_space][-3:] == ["red", "green", "blue"]
    stroke = {"flag": 1, "end_point": cell(renderer, 31, 0), "control_point": cell(renderer, 16, 0),
              "brush_size": 3, "pressure": 9, "red": 19, "green": 0, "blue": 10}
    image = renderer.render(program(renderer, [stroke]))[0]
    assert image.shape == (3, 64, 64)
    # On a black background a pixel is alpha * colour; red is 1, so colour = pixel / red.
    inked = image[0] > 0.5
    assert inked.sum() > 50
    colour = image[:, inked] / image[0, inked]
    torch.testing.assert_close(colour.mean(1), torch.tensor([1.0, 0.0, 10 / 19]), rtol=0, atol=0.01)
    assert image[:, 40:].sum() == 0


def test_strokes_composite_over_earlier_ones(engine):
    renderer = engine()
    there = {"flag": 1, "end_point": cell(renderer, 31, 0), "control_point": cell(renderer, 16, 0), "brush_size": 3,
             "pressure": 2}
    back = dict(there, end_point=cell(renderer, 0, 0))
    once = renderer.render(program(renderer, [there]))[0, 0]
    twice = renderer.render(program(renderer, [there, back]))[0, 0]
    inked = once > 0.05
    assert (twice[inked] >= once[inked] - 1e-6).all()
    assert twice[inked].mean() > once[inked].mean() + 0.05
    assert twice.max() <= 1


def test_high_resolution_rerender_matches_the_low_resolution_picture(engine):
    renderer = engine(canvas_size=64)
    actions = random_programs(renderer, 4, 6, seed=1)
    actions["brush_size"] = actions["brush_size"].clamp(min=2)
    low = renderer.render(actions)
    high_renderer = renderer.with_canvas_size(256)
    assert type(high_renderer) is type(renderer) and high_renderer.settings() == {**renderer.settings(),
                                                                                  "canvas_size": 256}
    high = high_renderer.render(actions)
    assert high.shape == (4, 1, 256, 256)
    pooled = torch.nn.functional.avg_pool2d(high, 4)
    # The dry brush's texture is redrawn at the finer scale; the picture must stay the same.
    tolerance = 0.02 if engine is sp.renderers.Brush else 0.1
    assert (pooled - low).pow(2).mean() < tolerance * low.pow(2).mean() + 1e-3


def test_canvases_stay_in_the_unit_interval(engine):
    renderer = engine(color=True, background=(0.2, 0.5, 1.0))
    images = renderer.render(random_programs(renderer, 16, 10, seed=3))
    assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
    blank = renderer.render({name: value[:, :1] * 0 for name, value in random_programs(renderer, 1, 1, 0).items()})
    torch.testing.assert_close(blank[0, :, 0, 0], torch.tensor([0.2, 0.5, 1.0]))


def test_the_same_program_runs_on_either_engine(engine):
    renderer = engine()
    prog = sp.programs.PaintProgram(renderer, steps=4)
    assert [c.name for c in prog.action_space] == ["flag", "end_point", "control_point", "brush_size", "pressure"]
    trace = sp.programs.trace(prog, image=torch.zeros(2, 1, 64, 64))
    assert trace.nodes["image"]["value"].shape == (2, 1, 64, 64)
    assert math.isfinite(trace.log_prob_sum().item())


class TestBadInput:
    @pytest.fixture(autouse=True)
    def _renderer(self, engine):
        self.engine = engine
        self.renderer = engine()
        self.actions = {c.name: torch.zeros(2, 3, dtype=torch.long) for c in self.renderer.action_space}

    def test_float_actions(self):
        with pytest.raises(TypeError, match="integer dtype"):
            self.renderer.render(dict(self.actions, pressure=torch.zeros(2, 3)))

    def test_out_of_range(self):
        with pytest.raises(ValueError, match=r"'end_point' must lie in \[0, 1023\]"):
            self.renderer.render(dict(self.actions, end_point=torch.full((2, 3), 1024)))
        with pytest.raises(ValueError, match="must lie in"):
            self.renderer.render(dict(self.actions, flag=torch.full((2, 3), -1)))

    def test_unknown_and_missing_components(self):
        with pytest.raises(ValueError, match=r"unknown: \['colour'\]"):
            self.renderer.render(dict(self.actions, colour=torch.zeros(2, 3, dtype=torch.long)))
        incomplete = dict(self.actions)
        del incomplete["pressure"]
        with pytest.raises(ValueError, match=r"missing: \['pressure'\]"):
            self.renderer.render(incomplete)

    def test_shapes(self):
        with pytest.raises(ValueError, match="same shape"):
            self.renderer.render(dict(self.actions, flag=torch.zeros(2, 4, dtype=torch.long)))
        with pytest.raises(ValueError, match=r"\(batch, steps\)"):
            self.renderer.render({name: value[0] for name, value in self.actions.items()})
        with pytest.raises(ValueError, match="empty batch"):
            self.renderer.render({name: value[:0] for name, value in self.actions.items()})
        with pytest.raises(TypeError, match="mapping"):
            self.renderer.render([1, 2, 3])

    def test_step_batch_mismatch(self):
        state = self.renderer.initial_state(3)
        with pytest.raises(ValueError, match="state holds 3 canvases"):
            self.renderer.step(state, {name: value[:, 0] for name, value in self.actions.items()})
        with pytest.raises(ValueError, match="batch_size"):
            self.renderer.initial_state(0)

    def test_constructor(self):
        with pytest.raises(ValueError, match="grid_size"):
            self.engine(canvas_size=16, grid_size=32)
        with pytest.raises(ValueError, match="sizes"):
            self.engine(sizes=[1, -2])
        with pytest.raises(ValueError, match="background"):
            self.engine(background=2.0)
        with pytest.raises(ValueError, match="canvas_size"):
            self.engine(canvas_size=math.pi)
        with pytest.raises(ValueError, match="width_scale"):
            self.engine(width_scale=0)
