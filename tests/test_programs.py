"""Programs as Pyro models: site names, shapes, log-probabilities, custom grammars, checks."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.renderers import Component
from tests.grammars import painted_over


class Rectangles(sp.programs.Program):
    """A custom grammar: filled rectangles on a 4x4 grid of a 16x16 canvas.

    Each step places a rectangle whose upper-left cell is ``corner`` and whose size is
    ``(width + 1, height + 1)`` cells, in grey level ``shade``; ``present = 0`` skips the step.
    """

    channels, image_size = 1, 16
    action_space = (
        Component("present", 2),
        Component("corner", 16, "location"),
        Component("width", 4),
        Component("height", 4),
        Component("shade", 2),
    )

    def draw(self, actions):
        pixel = torch.arange(16, device=actions["corner"].device) // 4  # grid cell of each pixel row/column
        left, top = (actions["corner"] % 4)[..., None], (actions["corner"] // 4)[..., None]
        inside_x = (pixel >= left) & (pixel <= left + actions["width"][..., None])
        inside_y = (pixel >= top) & (pixel <= top + actions["height"][..., None])
        level = (0.5 + 0.5 * actions["shade"]) * actions["present"]
        # Later rectangles paint over earlier ones; an absent one (level 0) covers nothing.
        cover = inside_y[..., :, None] & inside_x[..., None, :] & (level[..., None, None] > 0)  # (N, T, 16, 16)
        return painted_over(cover, level)


@pytest.fixture
def paint():
    return sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)


def test_trace_has_the_sites_shapes_and_hand_checked_log_probs(paint):
    images = torch.rand(3, 1, 16, 16)
    trace = sp.programs.trace(paint, images)
    latent = list(sp.programs.sample_sites(trace, observed=False))
    assert latent == [
        f"step_{t}/{name}" for t in range(2) for name in ("flag", "end_point", "control_point", "brush_size", "pressure")
    ]
    assert latent == paint.site_names()
    sizes = {"flag": 2, "end_point": 16, "control_point": 16, "brush_size": 6, "pressure": 10}
    for name in latent:
        node = trace.nodes[name]
        assert node["value"].shape == (3,) and node["value"].dtype == torch.long
        torch.testing.assert_close(node["log_prob"], torch.full((3,), -math.log(sizes[name.split("/")[1]])))
    # The image site: a Normal with standard deviation 0.5 around the canvas, summed by hand.
    canvas = paint.render(paint.actions_from_trace(trace))
    by_hand = (-0.5 * ((images - canvas) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
    image = trace.nodes["image"]
    assert image["is_observed"] and image["log_prob"].shape == (3,)
    torch.testing.assert_close(image["log_prob"], by_hand)
    torch.testing.assert_close(trace.nodes["_RETURN"]["value"], canvas)


def test_user_priors_and_pixel_scale(paint):
    prog = sp.programs.PaintProgram(
        paint.renderer, steps=2, priors={"flag": [1.0, 3.0], "pressure": torch.eye(10)[[2, 7]] + 1e-9}, pixel_scale=0.1
    )
    trace = sp.programs.trace(prog, torch.zeros(5, 1, 16, 16))
    flags = trace.nodes["step_0/flag"]
    torch.testing.assert_close(flags["log_prob"], torch.tensor([0.25, 0.75]).log()[flags["value"]])
    assert (trace.nodes["step_0/pressure"]["value"] == 2).all() and (trace.nodes["step_1/pressure"]["value"] == 7).all()
    assert prog.likelihood(torch.zeros(1, 1, 16, 16)).scale == pytest.approx(0.1)
    actions = prog.actions_from_trace(trace)
    expected = sum(trace.nodes[name]["log_prob"] for name in prog.site_names())
    torch.testing.assert_close(prog.log_prior(actions), expected)


def test_prior_table_draws_and_scores_every_site_like_the_priors(paint):
    priors = {"flag": [1.0, 3.0], "pressure": torch.eye(10)[[2, 7]] + torch.eye(10)[[4, 4]], "brush_size": [0, 1, 0, 2, 0, 0]}
    prog = sp.programs.PaintProgram(paint.renderer, steps=2, priors=priors)
    table = prog.prior_table()
    torch.manual_seed(0)
    draws = 100_000
    steps = torch.tensor([0, 1]).repeat(draws // 2)  # half of the draws at each step
    values = table.sample(steps)
    for t in range(2):
        at_t = {name: value[steps == t] for name, value in values.items()}
        site_log_probs = table.site_log_probs(steps[steps == t], at_t)  # (K, draws / 2)
        for index, component in enumerate(prog.action_space):
            prior, drawn = prog.prior(t, component.name), at_t[component.name]
            frequencies = torch.bincount(drawn, minlength=component.size).float() / drawn.numel()
            assert float(0.5 * (frequencies - prior.probs).abs().sum()) < 0.02, (component.name, t)
            assert bool((prior.probs[drawn] > 0).all())  # values of probability zero are never drawn
            torch.testing.assert_close(site_log_probs[index], prior.log_prob(drawn))
    programs = {c.name: torch.randint(c.size, (7, 2)) for c in prog.action_space}
    by_site = sum(prog.prior(t, c.name).log_prob(programs[c.name][:, t]) for t in range(2) for c in prog.action_space)
    torch.testing.assert_close(prog.log_prior(programs), by_site)
    prefix = {name: value[:, :1] for name, value in programs.items()}
    torch.testing.assert_close(
        prog.log_prior(prefix), sum(prog.prior(0, c.name).log_prob(prefix[c.name][:, 0]) for c in prog.action_space)
    )


def test_bad_priors_are_refused(paint):
    with pytest.raises(ValueError, match="unknown components"):
        sp.programs.PaintProgram(paint.renderer, steps=2, priors={"colour": [1.0]})
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(2, 2\)"):
        sp.programs.PaintProgram(paint.renderer, steps=2, priors={"flag": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="non-negative"):
        sp.programs.PaintProgram(paint.renderer, steps=2, priors={"flag": [1.0, -1.0]})
    with pytest.raises(ValueError, match="steps"):
        sp.programs.PaintProgram(paint.renderer, steps=0)


def test_render_takes_any_leading_batch_and_counts_every_program(paint):
    actions = {c.name: torch.randint(0, c.size, (2, 3, 2)) for c in paint.action_space}
    before = paint.renders
    images = paint.render(actions)
    assert images.shape == (2, 3, 1, 16, 16)
    assert paint.renders - before == 6
    flat = paint.render({name: value.reshape(6, 2) for name, value in actions.items()})
    torch.testing.assert_close(images.reshape(6, 1, 16, 16), flat)
    with pytest.raises(ValueError, match="has 2 steps"):
        paint.render({c.name: torch.zeros(1, 3, dtype=torch.long) for c in paint.action_space})


def test_step_wise_protocol_matches_whole_programs(paint):
    actions = {c.name: torch.randint(0, c.size, (4, 2)) for c in paint.action_space}
    state = paint.stepwise.initial(4)
    for t in range(2):
        state = paint.stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
    before = paint.renders
    torch.testing.assert_close(paint.stepwise.canvas(state), paint.render(actions))
    assert paint.renders - before == 8  # 4 intermediate canvases + 4 whole programs


def test_custom_grammar_in_a_few_lines():
    prog = Rectangles(steps=2)
    assert [c.name for c in prog.action_space] == ["present", "corner", "width", "height", "shade"]
    actions = {
        "present": torch.tensor([[1, 1]]),
        "corner": torch.tensor([[0, 10]]),  # cells (0, 0) and (2, 2)
        "width": torch.tensor([[1, 0]]),
        "height": torch.tensor([[0, 1]]),
        "shade": torch.tensor([[1, 0]]),
    }
    image = prog.render(actions)[0, 0]
    assert image[:4, :8].eq(1.0).all() and image[4:8].eq(0).all()
    assert image[8:16, 8:12].eq(0.5).all() and image[8:, 12:].eq(0).all()
    trace = sp.programs.trace(prog, image[None, None])
    assert set(prog.site_names()) < set(trace.nodes)
    # The default step-wise protocol re-draws the prefix; the empty one is a blank canvas.
    empty = prog.stepwise.initial(1)
    assert prog.stepwise.canvas(empty).shape == (1, 1, 16, 16) and prog.stepwise.canvas(empty).sum() == 0
    state = prog.stepwise.advance(empty, {k: v[:, 0] for k, v in actions.items()})
    assert prog.stepwise.canvas(state)[0, 0, 8:].sum() == 0


def test_a_program_must_declare_its_action_space():
    class Incomplete(sp.programs.Program):
        channels, image_size = 1, 8

        def draw(self, actions):
            return torch.zeros(1, 1, 8, 8)

    with pytest.raises(TypeError, match="action_space"):
        Incomplete(steps=1)


def test_model_enumerates_sites_in_parallel():
    prog = Rectangles(steps=1, priors={"width": [1, 0, 0, 0], "height": [1, 0, 0, 0], "shade": [0, 1]})
    target = prog.render({"present": torch.tensor([[1]]), "corner": torch.tensor([[5]]), "width": torch.tensor([[0]]),
                          "height": torch.tensor([[0]]), "shade": torch.tensor([[1]])})
    enumerated = pyro.infer.config_enumerate(prog.model, default="parallel")
    trace = pyro.poutine.trace(pyro.poutine.enum(enumerated, first_available_dim=-2)).get_trace(target)
    trace.compute_log_prob()
    joint = sum(node["log_prob"] for node in sp.programs.sample_sites(trace).values())
    best = joint.reshape(-1).argmax()
    values = [trace.nodes[name]["value"] for name in prog.site_names()]
    chosen = [torch.broadcast_tensors(*values)[i].reshape(-1)[best].item() for i in range(len(values))]
    assert chosen[0] == 1 and chosen[1] == 5


class TestImageChecks:
    def setup_method(self):
        self.prog = Rectangles(steps=1)

    def test_wrong_type_and_dtype(self):
        with pytest.raises(TypeError, match="torch.Tensor"):
            self.prog.model([[0.0]])
        with pytest.raises(TypeError, match="float tensor"):
            self.prog.model(torch.zeros(1, 1, 16, 16, dtype=torch.uint8))

    def test_wrong_shape(self):
        with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\).*image\[None\]"):
            self.prog.model(torch.zeros(1, 16, 16))
        with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
            self.prog.model(torch.zeros(2, 3, 16, 16))
        with pytest.raises(ValueError, match="empty batch"):
            self.prog.model(torch.zeros(0, 1, 16, 16))

    def test_range_and_nan(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            self.prog.model(torch.full((1, 1, 16, 16), 1.5))
        with pytest.raises(ValueError, match="NaN"):
            self.prog.model(torch.full((1, 1, 16, 16), float("nan")))

    def test_batch_size_disagreement(self):
        with pytest.raises(ValueError, match="batch_size=3"):
            self.prog.model(torch.zeros(2, 1, 16, 16), batch_size=3)


class TestWhatDrawReturns:
    """A program whose ``draw`` is wrong is refused at ``render``, naming the program, not deep in an engine."""

    @staticmethod
    def broken(returns):
        class Broken(Rectangles):
            def draw(self, actions):
                return returns(super().draw(actions))

        return Broken(steps=1)

    actions = {"present": torch.tensor([[1]]), "corner": torch.tensor([[5]]), "width": torch.tensor([[0]]),
               "height": torch.tensor([[0]]), "shade": torch.tensor([[1]])}

    def test_a_correct_draw_passes_unchanged(self):
        assert torch.equal(self.broken(lambda x: x).render(self.actions), Rectangles(steps=1).render(self.actions))

    @pytest.mark.parametrize("returns, error, match", [
        (lambda x: x.numpy(), TypeError, "Broken.draw must return a tensor"),
        (lambda x: x[:, 0], ValueError, r"shape \(1, 16, 16\).*expected \(1, 1, 16, 16\)"),
        (lambda x: x.expand(1, 3, 16, 16), ValueError, "channels=1"),
        (lambda x: (x * 255).to(torch.uint8), TypeError, "floating-point.*uint8"),
        (lambda x: x * float("nan"), ValueError, "NaN or infinite"),
        (lambda x: x * 2, ValueError, r"values in \[0, 2\]"),
        (lambda x: x - 1, ValueError, r"values in \[-1, 0\].*clamp"),
    ])
    def test_a_wrong_draw_is_named(self, returns, error, match):
        with pytest.raises(error, match=match):
            self.broken(returns).render(self.actions)


def test_pixel_normal_equals_pyro_normal_and_broadcasts():
    canvas, images = torch.rand(4, 3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    fast = sp.programs.PixelNormal(canvas, 0.3)
    reference = dist.Normal(canvas, 0.3).to_event(3)
    torch.testing.assert_close(fast.log_prob(images), reference.log_prob(images))
    assert fast.expand((2, 4, 3)).batch_shape == (2, 4, 3)
    sample = fast.sample((5,))
    assert sample.shape == (5, 4, 3, 3, 8, 8) and abs(float((sample - canvas).std()) - 0.3) < 0.01
    with pytest.raises(ValueError, match="positive"):
        sp.programs.PixelNormal(canvas, 0.0)


def test_fused_squared_error_matches_the_eager_one():
    from spiral_ppl.squared_error import squared_error

    generator = torch.Generator().manual_seed(3)
    canvases, targets = torch.rand(4, 5, 3, 16, 16, generator=generator), torch.rand(5, 3, 16, 16, generator=generator)
    eager = (canvases - targets).pow(2).sum((-3, -2, -1))
    for left, right in ((canvases, targets), (targets, canvases), (canvases, canvases.flip(0))):
        fused = squared_error(left, right, compile=True)
        assert fused.shape == (4, 5)
        torch.testing.assert_close(fused, (left - right).pow(2).sum((-3, -2, -1)), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(squared_error(canvases, targets, compile=False), eager, rtol=1e-6, atol=1e-4)
    # Operands that broadcast both ways, and gradients, take the eager path.
    assert squared_error(canvases[:, :1], targets[None], compile=True).shape == (4, 5)
    leaf = canvases.clone().requires_grad_()
    squared_error(leaf, targets, compile=True).sum().backward()
    torch.testing.assert_close(leaf.grad, 2 * (canvases - targets))


def test_custom_likelihood_is_used():
    prog = Rectangles(steps=1, likelihood=lambda canvas: dist.Laplace(canvas, 0.2).to_event(3))
    trace = sp.programs.trace(prog, torch.zeros(2, 1, 16, 16))
    canvas = trace.nodes["_RETURN"]["value"]
    expected = dist.Laplace(canvas, 0.2).to_event(3).log_prob(torch.zeros(2, 1, 16, 16))
    torch.testing.assert_close(trace.nodes["image"]["log_prob"], expected)


def test_sample_prior_draws_whole_programs_from_the_priors():
    prog = Rectangles(steps=3, priors={"present": [0.0, 1.0], "shade": [[1, 0], [0, 1], [1, 1]]})
    programs = prog.sample_prior(400, generator=torch.Generator().manual_seed(0))
    assert set(programs) == {c.name for c in prog.action_space}
    assert all(value.shape == (400, 3) and value.dtype == torch.long for value in programs.values())
    assert bool((programs["present"] == 1).all())  # a value of prior probability 0 is never drawn
    assert programs["shade"][:, 0].eq(0).all() and programs["shade"][:, 1].eq(1).all()  # per-step priors
    assert 0.4 < programs["shade"][:, 2].float().mean() < 0.6 and 5 < programs["corner"].float().mean() < 10
    again = prog.sample_prior(400, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(programs[name], again[name]) for name in programs)  # the generator decides
    with pytest.raises(ValueError, match="count must be a positive int"):
        prog.sample_prior(0)
