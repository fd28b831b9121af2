"""The step-wise protocol and the render meter: one rule for what a render is, kept by every engine."""

from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.programs import PrefixStepwise, RendererStepwise
from spiral_ppl.renderers import Component, Renderer
from spiral_ppl.squared_error import tiled_squared_error

pytestmark = pytest.mark.usefixtures("single_thread")


class DotsState(NamedTuple):
    canvas: torch.Tensor  # (B, 1, 4, 4)
    steps: torch.Tensor  # (B,) actions taken


class Dots(Renderer):
    """A toy renderer: each action lights one of 16 pixels at one of two levels.

    It counts the canvases it draws of programs that took at least one action (:attr:`drawn`),
    i.e. every canvas except the blank one, which is no render.
    """

    action_space = (Component("cell", 16, "location"), Component("level", 2))
    channels, image_size = 1, 4

    def __init__(self) -> None:
        self.drawn = 0

    def initial_state(self, batch_size, device=None):
        return DotsState(torch.zeros(batch_size, 1, 4, 4, device=device), torch.zeros(batch_size, dtype=torch.long))

    def step(self, state, action):
        canvas = state.canvas.clone().flatten(1)
        canvas[torch.arange(canvas.shape[0]), action["cell"]] = 0.5 + 0.5 * action["level"].float()
        return DotsState(canvas.view(-1, 1, 4, 4), state.steps + 1)

    def canvas(self, state):
        self.drawn += int((state.steps > 0).sum())
        return state.canvas.clone()


class ComparingDots(Dots):
    """:class:`Dots` that scores its canvases while it paints them, without drawing them."""

    compares_while_painting = True

    def step_and_compare(self, state, action, targets, rows=None):
        if rows is not None:
            state = DotsState(state.canvas[rows], state.steps[rows])
        state = self.step(state, action)
        return state, tiled_squared_error(state.canvas, targets)


class DotsGrammar(sp.programs.Program):
    """The dots as a custom grammar without a renderer: it re-draws prefixes, counting rows drawn."""

    action_space, channels, image_size = Dots.action_space, 1, 4

    def __init__(self, steps, **kwargs):
        self.dots = Dots()
        super().__init__(steps, **kwargs)

    @property
    def drawn(self):
        return self.dots.drawn

    def draw(self, actions):
        return self.dots.render(actions)


def dots_program(kind, steps=3):
    if kind == "grammar":
        return DotsGrammar(steps)
    return sp.programs.RendererProgram(Dots() if kind == "renderer" else ComparingDots(), steps)


def drawn(prog):
    return prog.drawn if isinstance(prog, DotsGrammar) else prog.renderer.drawn


def targets_of(prog, count=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    actions = {c.name: torch.randint(0, c.size, (count, prog.steps), generator=generator) for c in prog.action_space}
    return prog.render(actions)


class PeekingGuide(sp.inference.RenderingGuide):
    """A guide that draws the canvas after its first step through the program's step-wise protocol."""

    renders_per_sample = 1

    def __init__(self, prog):
        self.prog = prog

    def __call__(self, image):
        with pyro.plate("targets", image.shape[0], dim=-1):
            values = {}
            for t in range(self.prog.steps):
                for c in self.prog.action_space:
                    uniform = dist.Categorical(logits=torch.zeros(c.size))
                    values[(t, c.name)] = pyro.sample(f"step_{t}/{c.name}", uniform)
            first = {c.name: values[(0, c.name)].reshape(-1) for c in self.prog.action_space}
            stepwise = self.prog.stepwise
            stepwise.canvas(stepwise.advance(stepwise.initial(first["cell"].shape[0]), first))


ENGINES = {
    "importance": lambda prog: sp.inference.Importance(progress=False),
    "importance-rendering-guide": lambda prog: sp.inference.Importance(PeekingGuide(prog), progress=False),
    "mcmc": lambda prog: sp.inference.MCMC(chains=3, progress=False),
    "smc": lambda prog: sp.inference.SMC(progress=False),
    "smc-always-resample": lambda prog: sp.inference.SMC(ess_threshold=1.0, progress=False),
    "smc-rejuvenation": lambda prog: sp.inference.SMC(rejuvenation_moves=2, progress=False),
}


@pytest.mark.parametrize("kind", ["grammar", "renderer", "comparing-renderer"])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_engine_counts_exactly_the_canvases_the_program_drew(kind, engine):
    prog = dots_program(kind)
    images = targets_of(prog)
    meter_before, drawn_before = prog.renders, drawn(prog)
    result = ENGINES[engine](prog).infer(prog, images, sp.Budget(renders=37), seed=0)
    charged = prog.renders - meter_before
    assert charged == int(result.renders.sum()) == drawn(prog) - drawn_before
    assert int(result.renders[0]) <= 37


@pytest.mark.parametrize("kind", ["grammar", "renderer"])
def test_enumeration_counts_one_render_per_program_it_scores(kind):
    prog = dots_program(kind, steps=1)
    images = targets_of(prog, count=1)
    before, drawn_before = prog.renders, drawn(prog)
    sp.inference.enumerate_posterior(prog, images)
    # Pyro renders every one of the 32 programs in a pass: once for the evidence, again for the marginals.
    assert prog.renders - before == drawn(prog) - drawn_before and (prog.renders - before) % 32 == 0


def test_a_grammar_and_a_renderer_program_agree_on_canvases_counts_and_results():
    programs = [dots_program(kind) for kind in ("grammar", "renderer", "comparing-renderer")]
    actions = {c.name: torch.randint(0, c.size, (5, 3), generator=torch.Generator().manual_seed(1))
               for c in programs[0].action_space}
    canvases = []
    for prog in programs:
        stepwise, before = prog.stepwise, prog.renders
        state = stepwise.initial(5)
        seen = [prog.blank_canvas(5)]
        for t in range(3):
            state = stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
            seen.append(stepwise.canvas(state))
        seen.append(prog.render(actions))
        assert prog.renders - before == 3 * 5 + 5  # the blank canvas is free
        canvases.append(torch.stack(seen))
    assert torch.equal(canvases[0], canvases[1]) and torch.equal(canvases[0], canvases[2])
    images = targets_of(programs[0])
    results = [sp.inference.SMC(rejuvenation_moves=1, progress=False).infer(prog, images, sp.Budget(renders=30), seed=0)
               for prog in programs]
    for result in results[1:]:
        assert result.renders.tolist() == results[0].renders.tolist()
        torch.testing.assert_close(result.l2, results[0].l2)
        torch.testing.assert_close(result.log_weights, results[0].log_weights)


def test_advance_with_rows_advances_the_selected_states():
    for prog in (dots_program("grammar"), dots_program("renderer"), dots_program("comparing-renderer")):
        stepwise = prog.stepwise
        action = {"cell": torch.tensor([1, 2, 3]), "level": torch.tensor([0, 1, 1])}
        state = stepwise.advance(stepwise.initial(3), action)
        rows = torch.tensor([2, 0, 2, 1])
        later = {"cell": torch.tensor([5, 6, 7, 8]), "level": torch.tensor([1, 1, 1, 1])}
        expected = stepwise.canvas(stepwise.advance(stepwise.index(state, rows), later))
        targets = torch.rand(2, 1, 4, 4)
        advanced, errors = stepwise.advance_and_compare(state, later, targets, rows)
        assert torch.equal(stepwise.canvas(advanced), expected)
        assert (errors is not None) == stepwise.compares_while_painting
        if errors is not None:
            torch.testing.assert_close(errors, tiled_squared_error(expected, targets))


def test_the_built_in_programs_declare_their_capabilities():
    brush = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=2)
    assert isinstance(brush.stepwise, RendererStepwise) and brush.stepwise.compares_while_painting
    scene = sp.programs.SceneProgram(sp.renderers.MujocoScene(image_size=32, grid_size=4), steps=2)
    assert isinstance(scene.stepwise, RendererStepwise) and not scene.stepwise.compares_while_painting
    assert not sp.programs.Stepwise.compares_while_painting
    mypaint = sp.programs.PaintProgram(sp.renderers.MyPaint(canvas_size=16, grid_size=4), steps=2)
    assert isinstance(mypaint.stepwise, RendererStepwise) and not mypaint.stepwise.compares_while_painting
    grammar = dots_program("grammar")
    assert isinstance(grammar.stepwise, PrefixStepwise) and not grammar.stepwise.compares_while_painting
    assert dots_program("comparing-renderer").stepwise.compares_while_painting
    assert not dots_program("renderer").stepwise.compares_while_painting


def test_proposals_and_guides_declare_what_they_read_and_render():
    from spiral_ppl.inference.proposals import as_step_proposal

    prog = dots_program("renderer")
    assert not sp.inference.PriorProposal().reads_canvas
    assert not sp.inference.GuideProposal(lambda image: None).reads_canvas
    assert sp.inference.StepProposal.reads_canvas
    agent = sp.inference.Spiral(sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3),
                                config=sp.inference.SpiralConfig.small(reward={"kind": "l2"}), device="cpu")
    assert isinstance(agent.proposal, sp.inference.StepProposal) and agent.proposal.reads_canvas
    assert isinstance(agent.guide, sp.inference.RenderingGuide) and agent.guide.renders_per_sample == 2
    assert sp.inference.Importance(agent.guide).renders_per_sample() == 3
    assert sp.inference.Importance(lambda image: None).renders_per_sample() == 1
    assert sp.inference.Importance(PeekingGuide(prog)).renders_per_sample() == 2

    class Undeclared:
        def propose(self, program, step, history, canvas, images):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="subclass StepProposal"):
        as_step_proposal(Undeclared())


def test_the_meter_charges_non_negative_ints_and_measures_blocks():
    prog = dots_program("grammar")
    with pytest.raises(AttributeError):
        prog.renders = 3  # read the count; charge the meter
    with prog.meter.measure(targets=2) as spent:
        prog.meter.charge(4)
        prog.meter.charge(0)
    prog.meter.charge(10)
    assert (spent.total, spent.per_target, prog.renders) == (4, 2, 14)
    with pytest.raises(ValueError, match="renders must be a non-negative int"):
        prog.meter.charge(-1)
    with pytest.raises(ValueError, match="renders must be a non-negative int"):
        prog.meter.charge(True)
    with prog.meter.measure(targets=3) as uneven:
        prog.meter.charge(4)
    with pytest.raises(RuntimeError, match="do not split evenly"):
        uneven.per_target
