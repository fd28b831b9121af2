"""Importance sampling: exact recovery, unbiased evidence, guides, accounting, bad input."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import spiral_ppl as sp


def tiny_program(pixel_scale=0.5):
    """One stroke on a 16x16 canvas with a 4x4 grid: 2 * 16 * 16 = 512 programs in all."""
    brush = sp.renderers.Brush(canvas_size=16, grid_size=4, sizes=(4,), pressure_levels=1)
    return sp.programs.PaintProgram(brush, steps=1, pixel_scale=pixel_scale)


def every_program(prog):
    """All programs of a one-step program, as a batch ``{name: LongTensor[N, 1]}``."""
    values = list(itertools.product(*(range(c.size) for c in prog.action_space)))
    table = torch.tensor(values)
    return {c.name: table[:, i : i + 1] for i, c in enumerate(prog.action_space)}


def exact_log_evidence(prog, target):
    programs = every_program(prog)
    log_likelihood = prog.likelihood(prog.render(programs)).log_prob(target)
    return (log_likelihood + prog.log_prior(programs)).logsumexp(0)


TRUTH = {"flag": 1, "end_point": 14, "control_point": 3, "brush_size": 0, "pressure": 0}


def target_of(prog):
    return prog.render({name: torch.tensor([[value]]) for name, value in TRUTH.items()})


def test_recovers_a_one_step_target_exactly():
    prog = tiny_program()
    target = target_of(prog)
    result = sp.inference.Importance().infer(prog, target, sp.Budget(renders=3000), seed=0)
    assert result.l2.item() == 0
    torch.testing.assert_close(prog.render(result.actions), target)
    torch.testing.assert_close(result.images, target)
    assert result.actions["flag"].item() == 1 and result.actions["end_point"].item() == 14


def test_weights_evidence_ess_curve_and_accounting():
    prog = tiny_program(pixel_scale=2.0)
    targets = torch.cat([target_of(prog), torch.zeros(1, 1, 16, 16)])
    result = sp.inference.Importance(max_canvases=300).infer(prog, targets, sp.Budget(renders=4000), seed=1)
    assert result.log_weights.shape == (4000, 2)
    assert result.renders.tolist() == [4000, 4000]
    assert result.engine == "importance" and result.seconds > 0
    torch.testing.assert_close(result.log_evidence, result.log_weights.logsumexp(0) - math.log(4000))
    exact = torch.stack([exact_log_evidence(prog, target[None]) for target in targets])
    assert (result.log_evidence - exact).abs().max() < 0.05
    assert ((result.ess >= 1) & (result.ess <= 4000)).all()
    weights = result.log_weights.double().softmax(0)
    torch.testing.assert_close(result.ess.double(), 1 / weights.pow(2).sum(0), rtol=1e-4, atol=0)
    assert result.curve.l2.shape == (4000, 2) and result.curve.renders[-1] == 4000
    assert (result.curve.l2[1:] <= result.curve.l2[:-1]).all()
    torch.testing.assert_close(result.curve.l2[-1], result.l2)
    torch.testing.assert_close(result.l2, sp.programs.mean_squared_error(result.images, targets))


def test_evidence_estimate_is_unbiased_over_seeds():
    prog = tiny_program(pixel_scale=1.0)
    target = target_of(prog)
    exact = exact_log_evidence(prog, target).exp()
    estimates = [
        sp.inference.Importance().infer(prog, target, sp.Budget(renders=500), seed=seed).log_evidence.exp()
        for seed in range(20)
    ]
    assert torch.stack(estimates).mean().item() == pytest.approx(exact.item(), rel=0.1)


def peaked_guide(prog, truth, confidence=0.5):
    """A Pyro guide with the program's sites that puts ``confidence`` on the true value."""

    def guide(image):
        with pyro.plate("targets", image.shape[0], dim=-1):
            for component in prog.action_space:
                probs = torch.full((component.size,), (1 - confidence) / (component.size - 1 or 1))
                probs[truth[component.name]] = confidence if component.size > 1 else 1.0
                pyro.sample(sp.programs.site_name(0, component.name), dist.Categorical(probs))

    return guide


def test_a_good_guide_keeps_the_estimate_and_raises_the_ess():
    prog = tiny_program(pixel_scale=1.0)
    target = target_of(prog)
    exact = exact_log_evidence(prog, target)
    prior = sp.inference.Importance().infer(prog, target, sp.Budget(renders=2000), seed=2)
    guided = sp.inference.Importance(peaked_guide(prog, TRUTH)).infer(prog, target, sp.Budget(renders=2000), seed=2)
    assert guided.engine == "importance-guide"
    assert (guided.log_evidence - exact).abs().item() < 0.1
    assert guided.ess.item() > 5 * prior.ess.item()
    # With a guide the weights include the prior and the guide's own log-probabilities.
    assert guided.log_weights.max() > prior.log_weights.max() - 1e-3 - math.log(512) - 10


def test_a_guide_with_other_sites_is_refused():
    prog = tiny_program()

    def guide(image):
        with pyro.plate("targets", image.shape[0], dim=-1):
            pyro.sample("step_0/flag", dist.Categorical(torch.ones(2)))

    with pytest.raises(ValueError, match="missing"):
        sp.inference.Importance(guide).infer(prog, target_of(prog), sp.Budget(renders=10))


def test_custom_grammar_runs_without_engine_specific_code():
    from tests.test_programs import Rectangles

    prog = Rectangles(steps=1)
    target = prog.render({"present": torch.tensor([[1]]), "corner": torch.tensor([[5]]), "width": torch.tensor([[1]]),
                          "height": torch.tensor([[2]]), "shade": torch.tensor([[0]])})
    result = sp.inference.Importance().infer(prog, target, sp.Budget(renders=2000), seed=0)
    assert result.l2.item() == 0


class TestBadInput:
    def test_budget(self):
        with pytest.raises(ValueError, match="positive int"):
            sp.Budget(renders=0)
        with pytest.raises(ValueError, match="positive int"):
            sp.Budget(renders=2.5)
        prog = tiny_program()
        with pytest.raises(TypeError, match="sp.Budget"):
            sp.inference.Importance().infer(prog, target_of(prog), 100)

    def test_images_and_program(self):
        prog = tiny_program()
        with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
            sp.inference.Importance().infer(prog, torch.zeros(1, 1, 8, 8), sp.Budget(renders=10))
        with pytest.raises(ValueError, match="NaN"):
            sp.inference.Importance().infer(prog, torch.full((1, 1, 16, 16), math.nan), sp.Budget(renders=10))
        with pytest.raises(TypeError, match="Program"):
            sp.inference.Importance().infer("brush", torch.zeros(1, 1, 16, 16), sp.Budget(renders=10))

    def test_engine_arguments(self):
        with pytest.raises(TypeError, match="guide"):
            sp.inference.Importance(guide=3)
        with pytest.raises(ValueError, match="max_canvases"):
            sp.inference.Importance(max_canvases=0)
        with pytest.raises(ValueError, match="max_canvases"):
            sp.inference.Importance(max_canvases=True)


def test_seed_makes_runs_repeatable_and_leaves_the_global_state_alone():
    prog = tiny_program()
    target = target_of(prog)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = sp.inference.Importance().infer(prog, target, sp.Budget(renders=50), seed=7)
    after = torch.rand(1)
    second = sp.inference.Importance().infer(prog, target, sp.Budget(renders=50), seed=7)
    torch.testing.assert_close(first.log_weights, second.log_weights)
    torch.testing.assert_close(before, after)


def test_best_so_far_keeps_each_targets_least_l2_and_only_a_strictly_better_one_replaces_it():
    from spiral_ppl.inference.result import BestSoFar

    best = BestSoFar(2)
    images = torch.arange(4.0).view(2, 2, 1, 1, 1)  # candidate n of target b has the value 2n + b
    best.update(torch.tensor([[0.5, 0.2], [0.3, 0.4]]), images, {"a": torch.tensor([[[1], [2]], [[3], [4]]])})
    assert best.l2.tolist() == pytest.approx([0.3, 0.2])
    assert best.images.flatten().tolist() == [2.0, 1.0] and best.actions["a"].tolist() == [[3], [2]]
    best.update(torch.tensor([[0.3, 0.1]]), images[:1] + 10, {"a": torch.tensor([[[5], [6]]])})
    assert best.l2.tolist() == pytest.approx([0.3, 0.1])  # a tie keeps the earlier reconstruction
    assert best.images.flatten().tolist() == [2.0, 11.0] and best.actions["a"].tolist() == [[3], [6]]


def test_a_seeded_run_leaves_every_random_generator_as_it_was():
    import random

    import numpy as np

    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=8, grid_size=3, compile=False), steps=1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    sp.inference.Importance().infer(prog, torch.zeros(1, 1, 8, 8), sp.Budget(renders=2), seed=7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
