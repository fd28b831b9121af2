"""Blocked Metropolis-Hastings: exact marginals on a tiny program, recovery, accounting, errors."""

import warnings

import pyro
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.moves import BlockProposal, LocalProposal, ResidualProposal
from tests.grammars import Switches
from tests.paint_helpers import check_recovers_planted, three_planted_strokes, worst_total_variation

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny(two_stroke_program):
    """The two-stroke program, two planted targets and their exact posterior."""
    prog = two_stroke_program
    planted = {
        "flag": torch.tensor([[1, 1], [1, 0]]),
        "end_point": torch.tensor([[8, 2], [4, 6]]),
        "control_point": torch.tensor([[2, 5], [3, 0]]),
        "brush_size": torch.zeros(2, 2, dtype=torch.long),
        "pressure": torch.zeros(2, 2, dtype=torch.long),
    }
    images = prog.render(planted)
    return prog, images, sp.inference.enumerate_posterior(prog, images)


@pytest.mark.parametrize("blocks,proposal,moves", [
    ("step", "prior", {}), ("mixed", "uniform", {}), ("step", "prior", {"local": 0.5}),
    ("step", "prior", {"residual": 0.5}), ("mixed", "prior", {"local": 0.3, "residual": 0.3, "anneal": 0.05}),
], ids=["step-prior", "mixed-uniform", "local", "residual", "mixture-annealed"])
def test_marginals_converge_to_exact_enumeration(tiny, blocks, proposal, moves):
    prog, images, exact = tiny
    pyro.set_rng_seed(0)
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=128, blocks=blocks, proposal=proposal, **moves)
    mcmc = pyro.infer.MCMC(kernel, num_samples=400, warmup_steps=100, disable_progbar=True)
    mcmc.run(images)
    samples = mcmc.get_samples()
    assert samples["step_0/end_point"].shape == (400, 128, 2)
    assert worst_total_variation(samples, exact, prog) < 0.05
    # Prior draws are far from the posterior: the test can tell a sampler from no sampler.
    prior = {name: torch.randint(p.shape[-1], (400, 128, 2)) for name, p in exact.marginals.items()}
    assert worst_total_variation(prior, exact, prog) > 0.2


def test_the_default_mcmc_recovers_three_planted_strokes_to_a_twentieth_of_the_blank_l2():
    prog, images, blank = three_planted_strokes()
    engine = sp.inference.MCMC()
    assert engine.exponents[0] == 1.0 and engine.exponents[-1] == 15.0  # one chain samples the posterior
    result = engine.infer(prog, images, sp.Budget(renders=20_000), seed=0)
    assert result.renders.tolist() == [20_000] * 4
    assert torch.allclose(prog.draw(result.actions), result.images)
    assert float((result.l2 / blank).mean()) < 0.05


def test_the_default_moves_work_on_a_program_with_nothing_to_move_locally():
    # Switches has one unordered component: the defaults fall back to block moves (and, for
    # SMC, to prior proposals), where asking for local moves explicitly is refused.
    prog, images = Switches(steps=2), torch.zeros(3, 1, 4, 4)
    for engine in (sp.inference.MCMC(), sp.inference.SMC()):
        result = engine.infer(prog, images, sp.Budget(renders=60), seed=0)
        assert result.renders.tolist() == [60] * 3 and float(result.l2.max()) == 0.0
    with pytest.raises(ValueError, match="no location or ordered component for local moves"):
        sp.inference.MCMC(local=0.5).infer(prog, images, sp.Budget(renders=60), seed=0)


def test_parallel_tempering_leaves_the_posterior_of_its_untempered_chains_invariant(tiny):
    prog, images, exact = tiny
    pyro.set_rng_seed(0)
    # Chains untempered, hot, untempered and cold, 32 times over, neighbours swapping.
    exponents = (1.0, 0.3, 1.0, 3.0) * 32
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=128, local=0.3, exponents=exponents)
    mcmc = pyro.infer.MCMC(kernel, num_samples=400, warmup_steps=100, disable_progbar=True)
    mcmc.run(images)
    untempered = [chain for chain, exponent in enumerate(exponents) if exponent == 1.0]
    samples = {name: value[:, untempered] for name, value in mcmc.get_samples().items()}
    # Swapping without the ratio (always) gives 0.08 here.
    assert worst_total_variation(samples, exact, prog) < 0.05
    assert 0.05 < float(kernel._swaps_accepted) / kernel._swaps_offered < 0.95  # swaps happen, not always
    # The cold chains sit on likelier programs than the posterior's.
    log_joint, _ = kernel.traces()
    assert float(log_joint[:, 3::4].mean()) > float(log_joint[:, untempered].mean())
    with pytest.raises(ValueError, match=r"one positive likelihood exponent per chain \(4 of them\)"):
        sp.inference.MCMC(chains=4, exponents=(1, 2))
    with pytest.raises(ValueError, match="exponents must be"):
        sp.inference.MCMC(chains=2, exponents=(1, 0))
    assert sp.inference.MCMC(chains=3, exponents=16).exponents == (1.0, 4.0, 16.0)  # a ladder from 1
    with pytest.raises(ValueError, match="at least 2 chains"):
        sp.inference.MCMC(chains=1, exponents=16)


def test_runs_under_pyro_mcmc_with_several_chains_and_reports_invariant_diagnostics(tiny):
    prog, images, _ = tiny
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=8)
    with warnings.catch_warnings():
        # pyro.infer.MCMC warns when chains outnumber free cores, then runs them in turn.
        warnings.filterwarnings("ignore", message="num_chains=")
        mcmc = pyro.infer.MCMC(kernel, num_samples=30, warmup_steps=10, num_chains=2, disable_progbar=True)
        mcmc.run(images)
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["step_1/flag"].shape == (2, 30, 8, 2) and samples["step_1/flag"].dtype == torch.long
    assert samples["log_joint"].shape == (2, 30, 8, 2)
    # The kernel's statistics of the permutation-invariant quantities survive the run (of its last chain).
    diagnostics = kernel.diagnostics()
    rate = diagnostics["acceptance rate"]
    assert rate.shape == (2,) and bool(((rate > 0) & (rate < 1)).all())
    assert diagnostics["log_joint_r_hat"].shape == (2,)
    assert bool(torch.isfinite(diagnostics["log_joint_ess"]).all())
    assert kernel.best_l2.shape == (2,) and kernel.best_actions["flag"].shape == (2, 2)
    # Pyro's per-site statistics need float samples.
    per_site = pyro.infer.mcmc.util.diagnostics({name: value.float() for name, value in samples.items()})
    assert per_site["log_joint"]["r_hat"].shape == (8, 2)


def test_initial_params_start_the_chains_there(tiny):
    prog, images, _ = tiny
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=3)
    planted = {"step_0/flag": 1, "step_0/end_point": 8, "step_0/control_point": 2, "step_0/brush_size": 0,
               "step_0/pressure": 0, "step_1/flag": 1, "step_1/end_point": 2, "step_1/control_point": 5,
               "step_1/brush_size": 0, "step_1/pressure": 0}
    kernel.initial_params = {name: torch.tensor(value) for name, value in planted.items()}
    kernel.setup(0, images[:1])
    assert float(kernel.best_l2[0]) == 0.0
    assert kernel.current_actions["end_point"].tolist() == [[[8, 2]]] * 3
    kernel.cleanup()
    kernel.initial_params = {"step_0/flag": torch.tensor(1)}
    with pytest.raises(ValueError, match="lacks the sites"):
        kernel.setup(0, images[:1])
    kernel.initial_params = {name: torch.tensor(value + 0.5) for name, value in planted.items()}
    with pytest.raises(ValueError, match="whole action values"):
        kernel.setup(0, images[:1])


def test_block_proposal_moves_one_block_and_cancels_the_prior(tiny):
    prog, _, _ = tiny
    actions = {c.name: torch.zeros(500, 2, dtype=torch.long) for c in prog.action_space}
    torch.manual_seed(0)
    proposed, log_q_ratio = BlockProposal(prog, blocks="site", proposal="prior")(actions)
    changed = torch.stack([proposed[name] != actions[name] for name in actions])  # (K, 500, 2)
    assert int(changed.flatten(1).sum(0).max()) == 1  # single-site: one site changes at most
    # A uniform prior makes an independence proposal from it symmetric.
    assert torch.allclose(log_q_ratio, torch.zeros(500))
    skewed = sp.programs.PaintProgram(prog.renderer, steps=2, priors={"flag": [0.9, 0.1]})
    actions["flag"] = torch.ones(500, 2, dtype=torch.long)
    flags, log_q_ratio = BlockProposal(skewed, blocks="step")(actions)
    flags = flags["flag"]
    # One step of each program is redrawn from the prior (90% zeros), the other keeps its 1.
    assert 0.40 < float((flags == 0).float().mean()) < 0.50
    assert torch.allclose(log_q_ratio[flags.sum(-1) == 2], torch.tensor(0.1).log() - torch.tensor(0.1).log())
    assert torch.allclose(log_q_ratio[flags.sum(-1) == 1], torch.tensor(0.1).log() - torch.tensor(0.9).log())
    with pytest.raises(ValueError, match="blocks must be one of"):
        BlockProposal(prog, blocks="row")


def test_local_moves_are_symmetric_steps_of_a_few_cells_or_one_value(tiny):
    prog, _, _ = tiny
    wide = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=8, compile=False), steps=2)
    actions = {c.name: torch.randint(c.size, (4000, 2), generator=torch.Generator().manual_seed(0))
               for c in wide.action_space}
    torch.manual_seed(0)
    move = LocalProposal(wide, radius=2)(actions)
    changed = torch.stack([move.actions[name] != actions[name] for name in actions])  # (K, 4000, 2)
    assert int(changed.flatten(1).sum(0).max()) == 1 and not bool(changed[0].any())  # one site; never the flag
    # A moved location stays within 2 cells along each axis; an ordered value moves by one.
    for name in ("end_point", "control_point"):
        moved = changed[[c.name for c in wide.action_space].index(name)]
        old, new = actions[name][moved], move.actions[name][moved]
        assert int((old // 8 - new // 8).abs().max()) <= 2 and int((old % 8 - new % 8).abs().max()) <= 2
    for name in ("brush_size", "pressure"):
        moved = changed[[c.name for c in wide.action_space].index(name)]
        assert bool(((actions[name][moved] - move.actions[name][moved]).abs() == 1).all())
    # Symmetric, so the ratio is 0; a move off the grid or past the values keeps the site and is refused.
    refused = torch.isinf(move.log_q_known)
    assert bool((move.log_q_known[~refused] == 0).all()) and 0.05 < float(refused.float().mean()) < 0.5
    assert not bool(changed[:, refused].any())
    # The tiny program's brush size and pressure have one value each: nothing to move there.
    assert [c.name for c in LocalProposal(prog).movable] == ["end_point", "control_point"]
    with pytest.raises(ValueError, match="no location or ordered component"):
        LocalProposal(Switches(steps=1), radius=1)


def test_residual_moves_put_locations_where_the_canvas_misses_the_target(tiny):
    prog, images, _ = tiny
    blank = prog.blank_canvas(1).expand(2, *prog.blank_canvas(1).shape[1:])
    proposal = ResidualProposal(prog, uniform=0.2)
    log_p = proposal.cell_log_probs(blank, images, 3)  # (2, 9)
    # The cells' shares of the squared residual, pooled over the 3x3 grid, mixed 80/20 with a uniform.
    pooled = torch.nn.functional.adaptive_avg_pool2d((images - blank).pow(2).sum(1, keepdim=True), 3).flatten(1)
    torch.testing.assert_close(log_p.exp(), 0.8 * pooled / pooled.sum(1, keepdim=True) + 0.2 / 9)
    # A perfect canvas leaves no residual: every cell alike.
    torch.testing.assert_close(proposal.cell_log_probs(images, images, 3).exp(), torch.full((2, 9), 1 / 9))
    actions = {c.name: torch.zeros(300, 2, 2, dtype=torch.long) for c in prog.action_space}
    torch.manual_seed(0)
    move = proposal(actions, blank.expand(300, 2, 1, 8, 8), images)
    drawn = torch.nn.functional.one_hot(move.actions["end_point"].flatten(0, 1).amax(-1), 9).float().mean(0)
    assert float(drawn @ pooled.mean(0)) > float(pooled.mean())  # likelier where ink is missing
    assert move.reverse is not None and move.log_q_ratio(images.expand(300, 2, 1, 8, 8)).shape == (300, 2)
    with pytest.raises(ValueError, match="no location component"):
        ResidualProposal(Switches(steps=1))


def test_engine_spends_exactly_its_budget_and_recovers_a_planted_program(planted16):
    prog, images = planted16
    # 3001 is not a multiple of the chains: one last partial transition.
    result = check_recovers_planted(sp.inference.MCMC(chains=4, blocks="mixed"), prog, images, 3001)
    assert int(result.curve.renders[-1]) == 3001 and int(result.curve.renders[0]) == 4
    assert bool((result.curve.l2[1:] <= result.curve.l2[:-1]).all())
    assert torch.allclose(result.curve.l2[-1], result.l2)
    diagnostics = result.diagnostics
    transitions = (3001 - 4) // 4
    assert diagnostics["log_joint"].shape == (transitions - int(0.5 * transitions), 4, 4)
    assert diagnostics["acceptance_rate"].shape == (4,)
    assert bool(torch.isfinite(diagnostics["log_joint_r_hat"]).all())
    assert diagnostics["chain_actions"]["flag"].shape == (4, 4, 3)


def test_default_engine_beats_random_programs(planted16):
    prog, images = planted16
    budget = sp.Budget(renders=2000)
    result = sp.inference.MCMC().infer(prog, images, budget, seed=1)
    random = sp.inference.Importance().infer(prog, images, budget, seed=1)
    assert result.renders.tolist() == [2000] * 4
    assert float(result.l2.mean()) < 0.8 * float(random.l2.mean())


def test_bad_arguments_get_clear_errors(tiny):
    prog, images, _ = tiny
    with pytest.raises(ValueError, match="chains must be a positive int"):
        sp.inference.MCMC(chains=0)
    with pytest.raises(ValueError, match="warmup must be a fraction"):
        sp.inference.MCMC(warmup=1.5)
    with pytest.raises(ValueError, match="proposal must be one of"):
        sp.inference.MCMC(proposal="gaussian")
    with pytest.raises(ValueError, match="at least 4 renders per target"):
        sp.inference.MCMC(chains=4).infer(prog, images, sp.Budget(renders=3))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        sp.inference.MCMC().infer(prog, torch.zeros(2, 1, 16, 16), sp.Budget(renders=100))
    with pytest.raises(TypeError, match="Program"):
        sp.inference.BlockedMetropolisHastings(lambda image: None)
    with pytest.raises(RuntimeError, match="setup"):
        sp.inference.BlockedMetropolisHastings(prog).sample({})
    for engine in (sp.inference.MCMC, sp.inference.SMC):
        with pytest.raises(ValueError, match="local \\+ residual .* at most 1; got local=0.7 and residual=0.5"):
            engine(local=0.7, residual=0.5)
        with pytest.raises(ValueError, match=r"local must be a number in \[0, 1\].*got '0.5'"):
            engine(local="0.5")
    with pytest.raises(ValueError, match=r"anneal must be a number in \(0, 1\]"):
        sp.inference.MCMC(anneal=0)
    with pytest.raises(ValueError, match="no location or ordered component"):
        sp.inference.MCMC(local=0.5).infer(Switches(steps=1), torch.zeros(1, 1, 4, 4), sp.Budget(renders=8))
