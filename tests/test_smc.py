"""SMC over program steps: unbiased evidence on a tiny program, recovery, accounting, errors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.smc_schedules import particle_schedule, systematic_resample, tempering_schedule
from tests.custom_grammar_module import Squares
from tests.grammars import Switches
from tests.paint_helpers import check_recovers_planted, three_planted_strokes, worst_total_variation

pytestmark = pytest.mark.usefixtures("single_thread")


def particles_alone(proposal=None, **options) -> sp.inference.SMC:
    """SMC without the defaults' rejuvenation moves and cooling: particles, weights, resampling."""
    return sp.inference.SMC(proposal, **{"rejuvenation_moves": 0, "cooling": None, **options})


@pytest.fixture(scope="module")
def tiny(two_stroke_program):
    """The two-stroke program, a planted target and its exact log evidence."""
    prog = two_stroke_program
    planted = {"flag": torch.tensor([[1, 1]]), "end_point": torch.tensor([[8, 2]]),
               "control_point": torch.tensor([[2, 5]]), "brush_size": torch.tensor([[0, 0]]),
               "pressure": torch.tensor([[0, 0]])}
    image = prog.render(planted)
    return prog, image, float(sp.inference.enumerate_posterior(prog, image).log_evidence[0])


def skewed_guide(image):
    """A Pyro guide unlike the prior: value 0 of every component three times as likely."""
    with pyro.plate("targets", image.shape[0], dim=-1):
        for t in range(2):
            for name, size in (("flag", 2), ("end_point", 9), ("control_point", 9), ("brush_size", 1), ("pressure", 1)):
                probs = torch.ones(size)
                probs[0] = 3.0
                pyro.sample(f"step_{t}/{name}", dist.Categorical(probs / probs.sum()))


@pytest.mark.parametrize(
    "proposal,ess_threshold,intermediate,tempering",
    [(None, 0.5, "model", None), (skewed_guide, 1.0, "model", None), (None, 0.0, "model", None),
     (skewed_guide, 1.0, "proposal", 0.1), (None, 1.0, "model", (0.0, 1.0)),
     (sp.inference.ResidualStepProposal(), 0.5, "model", None)],
    ids=["prior-adaptive", "guide-always-resample", "prior-never-resample", "guide-proposal-targets-tempered",
         "prior-likelihood-only-at-the-end", "residual-proposal"],
)
def test_log_evidence_is_unbiased(tiny, proposal, ess_threshold, intermediate, tempering):
    prog, image, log_z = tiny
    replicates = 200  # independent runs, one per copy of the target
    images = image.expand(replicates, -1, -1, -1)
    # 801 renders over 2 steps: 401 particles, then 400 after a forced resampling.
    engine = particles_alone(proposal, ess_threshold=ess_threshold, intermediate=intermediate, tempering=tempering)
    result = engine.infer(prog, images, sp.Budget(renders=801), seed=0)
    assert result.renders.tolist() == [801] * replicates
    assert result.diagnostics["particles"] == [401, 400]
    ratio = (result.log_evidence - log_z).exp()
    assert abs(float(ratio.mean()) - 1) < 0.1
    assert result.log_weights.shape == (400, replicates)


def test_the_residual_proposal_places_strokes_where_ink_is_missing(planted16):
    prog, images = planted16
    blank = images.pow(2).flatten(1).mean(1)
    by_prior = sp.inference.SMC.paper_baseline().infer(prog, images, sp.Budget(renders=300), seed=0)
    by_residual = particles_alone("residual").infer(prog, images, sp.Budget(renders=300), seed=0)
    assert float((by_residual.l2 / blank).mean()) < 0.8 * float((by_prior.l2 / blank).mean())
    with pytest.raises(ValueError, match="uniform must be a number in \\(0, 1\\]"):
        sp.inference.ResidualStepProposal(uniform=0)
    # Without a location to place, the residual proposal is the prior's: the same particles.
    switches, blank_switches = Switches(steps=2), torch.zeros(3, 1, 4, 4)
    results = [particles_alone(proposal).infer(switches, blank_switches, sp.Budget(renders=40), seed=0)
               for proposal in ("residual", "prior")]
    assert torch.equal(results[0].log_weights, results[1].log_weights)


def test_weights_telescope_to_the_full_importance_weight(tiny):
    prog, image, _ = tiny
    images = image.expand(6, -1, -1, -1)
    # One particle per target (2 renders over 2 steps): its weight is its importance weight.
    for proposal in (None, skewed_guide):
        result = particles_alone(proposal).infer(prog, images, sp.Budget(renders=2), seed=0)
        log_likelihood = prog.likelihood(prog.draw(result.actions)).log_prob(images)
        if proposal is None:
            log_weight = log_likelihood  # p(a) p(x | a) / q(a) with q = p
        else:
            # q puts 3/(size + 2) on value 0 and 1/(size + 2) on the others, at every site.
            log_q = sum(
                torch.where(value == 0, 3.0, 1.0).div(size + 2).log().sum(-1)
                for value, size in ((result.actions[c.name], c.size) for c in prog.action_space)
            )
            log_weight = prog.log_prior(result.actions) + log_likelihood - log_q
        assert torch.allclose(result.log_weights[0], log_weight, atol=1e-3)
        assert torch.allclose(result.log_evidence, log_weight, atol=1e-3)


def test_intermediate_targets_change_which_prefixes_survive_not_the_final_weights(tiny):
    prog, image, _ = tiny
    images = image.expand(4, -1, -1, -1)
    engines = {"default": particles_alone(skewed_guide, ess_threshold=0.0),
               "proposal-tempered": particles_alone(skewed_guide, ess_threshold=0.0, intermediate="proposal",
                                                    tempering=0.01)}
    results = {name: engine.infer(prog, images, sp.Budget(renders=100), seed=3) for name, engine in engines.items()}
    # Without resampling the same seed draws the same particles: the intermediate targets
    # only move weight between steps, so the final weights are the same importance weights.
    for name in results["default"].actions:
        assert torch.equal(results["default"].actions[name], results["proposal-tempered"].actions[name])
    assert torch.allclose(results["default"].log_weights, results["proposal-tempered"].log_weights, atol=1e-3)
    assert results["proposal-tempered"].diagnostics["tempering"] == [0.01, 1.0]
    # After the first step they differ: the deferred prior/proposal ratio and the tempered
    # likelihood leave the proposal-targeted weights much flatter.
    ess = {name: result.diagnostics["ess"][0] for name, result in results.items()}
    assert bool((ess["proposal-tempered"] > 2 * ess["default"]).all())


def test_tempering_schedules():
    assert tempering_schedule(None, 3) == [1.0, 1.0, 1.0]
    assert tempering_schedule(0.01, 3) == pytest.approx([0.01, 0.1, 1.0])
    assert tempering_schedule(0.5, 1) == [1.0]
    assert tempering_schedule((0.0, 0.5, 1.0), 3) == [0.0, 0.5, 1.0]
    assert tempering_schedule([0, 1], 2) == [0.0, 1.0] and tempering_schedule(1, 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="tempering must be"):
        tempering_schedule((0.5, 0.9), 2)  # the last exponent must be 1: the posterior
    with pytest.raises(ValueError, match="one each"):
        tempering_schedule((0.5, 1.0), 3)
    for bad in (0.0, 1.5, -0.1, True, "0.1", (), (0.5, 0.9), (0.5, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="tempering must be"):
            sp.inference.SMC(tempering=bad)
    with pytest.raises(ValueError, match="intermediate must be one of"):
        sp.inference.SMC(intermediate="policy")
    with pytest.raises(ValueError, match="rejuvenation moves need intermediate='model'"):
        sp.inference.SMC(intermediate="proposal", rejuvenation_moves=1)


@pytest.mark.parametrize("moves", [{}, {"local": 0.5}, {"residual": 0.5}], ids=["blocks", "local", "residual"])
def test_rejuvenation_targets_the_tempered_intermediate_targets(tiny, moves):
    prog, image, log_z = tiny
    replicates = 200
    images = image.expand(replicates, -1, -1, -1)
    engine = sp.inference.SMC(ess_threshold=1.0, tempering=0.2, rejuvenation_moves=1, **moves)
    result = engine.infer(prog, images, sp.Budget(renders=800), seed=0)
    ratio = (result.log_evidence - log_z).exp()
    assert abs(float(ratio.mean()) - 1) < 0.1


def test_cooling_leaves_each_sharpened_posterior_invariant(two_stroke_program):
    prog = two_stroke_program
    one_stroke = {"flag": torch.tensor([[1, 0]]), "end_point": torch.tensor([[7, 0]]),
                  "control_point": torch.tensor([[2, 0]]), "brush_size": torch.zeros(1, 2, dtype=torch.long),
                  "pressure": torch.zeros(1, 2, dtype=torch.long)}
    image = prog.render(one_stroke)
    # A Normal likelihood to the power 4 is, up to a constant, the one with half the pixel noise.
    sharpened = sp.programs.PaintProgram(prog.renderer, steps=2, pixel_scale=prog.pixel_scale / 2)
    exact = sp.inference.enumerate_posterior(sharpened, image)
    replicates = 300  # independent runs, their cooled particles pooled
    engine = sp.inference.SMC("prior", rejuvenation_moves=0, local=0.3, residual=0.3, cooling=4.0, cooling_stages=2,
                              cooling_share=0.8)
    result = engine.infer(prog, image.expand(replicates, -1, -1, -1), sp.Budget(renders=8000), seed=0)
    assert result.diagnostics["cooling"].exponents == (2.0, 4.0)
    cooled = result.diagnostics["cooled_actions"]  # {component: (N, replicates, steps)}
    samples = {f"step_{t}/{name}": value[..., t] for name, value in cooled.items() for t in range(prog.steps)}
    assert worst_total_variation(samples, exact, prog) < 0.05
    # The test can tell: the posterior itself is far from its sharpened self.
    posterior = sp.inference.enumerate_posterior(prog, image).marginals
    assert max(float(0.5 * (posterior[name] - exact.marginals[name]).abs().sum()) for name in posterior) > 0.1


def test_the_default_smc_recovers_three_planted_strokes_to_a_twentieth_of_the_blank_l2():
    prog, images, blank = three_planted_strokes()
    result = sp.inference.SMC().infer(prog, images, sp.Budget(renders=20_000), seed=0)
    assert all(19_990 <= renders <= 20_000 for renders in result.renders.tolist())  # within 2 per move a step
    assert torch.allclose(prog.draw(result.actions), result.images)
    assert float((result.l2 / blank).mean()) < 0.05
    cooling = result.diagnostics["cooling"]
    assert cooling.exponents[-1] == 40.0 and cooling.renders <= 18_000
    rate = result.diagnostics["cooling_acceptance_rate"]
    assert bool(((rate > 0) & (rate < 1)).all())


def test_recovers_a_planted_program_and_spends_exactly_its_budget(planted16):
    prog, images = planted16
    result = check_recovers_planted(sp.inference.SMC.paper_baseline(), prog, images, 3001)
    assert result.diagnostics["particles"] == [1001, 1000, 1000]

    diagnostics = result.diagnostics
    assert diagnostics["ess"].shape == (3, 4) and diagnostics["resampled"].shape == (3, 4)
    assert [tuple(a.shape) for a in diagnostics["ancestry"]] == [(1001, 4), (1000, 4), (1000, 4)]
    assert bool(diagnostics["resampled"][1].all())  # the population shrinks by resampling
    assert not bool(diagnostics["resampled"][-1].any())


def test_rejuvenation_keeps_states_and_histories_in_step_on_a_custom_grammar():
    prog = Squares(steps=3, pixel_scale=0.3)
    target = prog.render({"corner": torch.tensor([[0, 5, 15], [3, 3, 12]]), "present": torch.tensor([[1, 1, 1], [1, 0, 1]])})
    engine = sp.inference.SMC("prior", ess_threshold=1.0, rejuvenation_moves=2, blocks="mixed", local=0.0, cooling=None)
    result = engine.infer(prog, target, sp.Budget(renders=905), seed=0)
    # 3 renders per particle and step: 100 particles for 900 renders; with one more for the
    # first 2 steps, the step-0 moves run on the 101 particles of step 1: 2 + 2 renders more.
    assert result.diagnostics["particles"] == [101, 101, 100]
    assert result.renders.tolist() == [904, 904]
    rate = result.diagnostics["acceptance_rate"]
    assert rate.shape == (2,) and bool(((rate > 0) & (rate < 1)).all())
    assert torch.allclose(prog.draw(result.actions), result.images)
    assert float(result.l2.max()) == 0.0  # 16 x 2 values per step: found exactly
    assert int(result.curve.renders[-1]) == 904


def test_systematic_resampling_and_particle_schedule():
    torch.manual_seed(0)
    log_weights = torch.tensor([[0.0, 0.0], [math.log(3.0), -math.inf], [-math.inf, 0.0]])
    ancestors = systematic_resample(log_weights, 8)
    assert ancestors.shape == (8, 2)
    assert sorted(ancestors[:, 0].tolist()).count(1) == 6  # 3/4 of 8, exactly: systematic
    assert 2 not in ancestors[:, 0].tolist() and 1 not in ancestors[:, 1].tolist()
    assert particle_schedule(11, 3) == [4, 4, 3]
    assert particle_schedule(20, 3, moves=1) == [4, 3, 3]  # 4 + 3 + 3 draws, 3 + 3 + 3 moves
    assert particle_schedule(18, 3, moves=2) == [2, 2, 2]
    # A proposal that draws a canvas of its own doubles what a particle costs at each step.
    assert particle_schedule(20, 3, per_particle=2) == [4, 3, 3]  # 2 * (4 + 3 + 3)
    assert particle_schedule(30, 3, moves=1, per_particle=2) == [4, 3, 3]  # 2 * 10 + (3 + 3 + 3) = 29
    with pytest.raises(ValueError, match=r"every particle of targets \[1\] has zero"):
        systematic_resample(torch.tensor([[0.0, -math.inf], [1.0, -math.inf]]), 2)


def test_bad_arguments_get_clear_errors(tiny):
    prog, image, _ = tiny
    with pytest.raises(ValueError, match="at least 2 renders per target"):
        sp.inference.SMC().infer(prog, image, sp.Budget(renders=1))
    with pytest.raises(ValueError, match="at least 6 renders per target"):
        sp.inference.SMC(rejuvenation_moves=2).infer(prog, image, sp.Budget(renders=5))
    with pytest.raises(ValueError, match="ess_threshold"):
        sp.inference.SMC(ess_threshold=1.5)
    with pytest.raises(ValueError, match="rejuvenation_moves"):
        sp.inference.SMC(rejuvenation_moves=-1)
    with pytest.raises(TypeError, match="proposal must be None"):
        sp.inference.SMC(proposal=3)
    with pytest.raises(ValueError, match="proposal must be 'prior', 'residual'.*got 'residuals'"):
        sp.inference.SMC(proposal="residuals")
    for bad in (1.0, 0.5, float("nan"), float("inf"), "40"):
        with pytest.raises((ValueError, TypeError), match="cooling"):
            sp.inference.SMC(cooling=bad)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="cooling_share"):
            sp.inference.SMC(cooling_share=bad)
    with pytest.raises(ValueError, match="cooling_stages"):
        sp.inference.SMC(cooling_stages=0)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        sp.inference.SMC().infer(prog, torch.zeros(1, 3, 8, 8), sp.Budget(renders=10))

    class WrongBatch(sp.inference.StepProposal):
        def propose(self, program, step, history, canvas, images):
            action = {c.name: torch.zeros(3, dtype=torch.long) for c in program.action_space}
            return action, torch.zeros(3)

    with pytest.raises(ValueError, match=r"expected \(particles, targets\) = \(5, 1\)"):
        particles_alone(WrongBatch()).infer(prog, image, sp.Budget(renders=10))

    class NotAProbability(sp.inference.StepProposal):
        def propose(self, program, step, history, canvas, images):
            action = {c.name: torch.zeros(canvas.shape[:2], dtype=torch.long) for c in program.action_space}
            return action, torch.full(canvas.shape[:2], float("nan"))

    with pytest.raises(ValueError, match="log_q must be finite"):
        sp.inference.SMC(NotAProbability()).infer(prog, image, sp.Budget(renders=10))

    def partial_guide(image):
        with pyro.plate("targets", image.shape[0], dim=-1):
            pyro.sample("step_0/flag", dist.Categorical(torch.ones(2) / 2))

    with pytest.raises(ValueError, match="did not sample the site 'step_0/end_point'"):
        sp.inference.SMC(partial_guide).infer(prog, image, sp.Budget(renders=10))


def test_stepwise_index_selects_particles_of_any_tensor_state(tiny):
    prog, _, _ = tiny
    state = prog.stepwise.initial(3)
    state = prog.stepwise.advance(state, {c.name: torch.tensor([0, 1, 2]) % c.size for c in prog.action_space})
    picked = prog.stepwise.index(state, torch.tensor([2, 2, 0]))
    assert type(picked) is type(state) and picked.position.tolist() == [2, 2, 0]
    assert torch.equal(picked.canvas[0], state.canvas[2])
    with pytest.raises(TypeError, match="override index"):
        prog.stepwise.index(object(), torch.tensor([0]))


def test_a_budget_whose_particles_cannot_fit_in_memory_is_refused_up_front():
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=2)
    with pytest.raises(ValueError, match=r"would hold 500,000,000,000,000 particles' canvases .* GiB"):
        sp.inference.SMC.paper_baseline().infer(prog, torch.zeros(1, 1, 16, 16), sp.Budget(renders=10**15))
