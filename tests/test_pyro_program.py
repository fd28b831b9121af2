"""A plain Pyro model as a program (sp.programs.PyroProgram): the same program as the subclass it
mirrors, every engine on it unchanged, and clear errors for models outside the contract."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import spiral_ppl as sp
from spiral_ppl.inference import SpiralConfig
from tests.grammars import Discs, discs_model, draw_discs, normal_discs

SIZES = {"present": 2, "centre": 64, "radius": 3, "intensity": 4}


def masked_discs(image=None, batch_size=1, steps=2, presence=(0.3, 0.7)):
    """Discs whose absent discs' centre, radius and grey level are masked out of the joint, and
    whose later discs are likelier present after a present one (a prior depending on earlier sites)."""
    if image is not None:
        batch_size = image.shape[0]
    drawn = {name: [] for name in SIZES}
    with pyro.plate("targets", batch_size):
        previous = torch.zeros(batch_size, dtype=torch.long)
        for t in range(steps):
            probs = torch.tensor([presence, (0.1, 0.9)])[previous] if t else torch.tensor(presence)
            present = pyro.sample(f"step_{t}/present", dist.Categorical(probs=probs))
            drawn["present"].append(present)
            with poutine.mask(mask=present == 1):
                for name in ("centre", "radius", "intensity"):
                    infer = {"location": (8, 8)} if name == "centre" else {}
                    drawn[name].append(pyro.sample(f"step_{t}/{name}", dist.Categorical(logits=torch.zeros(SIZES[name])),
                                                   infer=infer))
            previous = present
        canvas = draw_discs({name: torch.stack(values, -1) for name, values in drawn.items()})
        pyro.sample("image", sp.programs.PixelNormal(canvas, 0.5), obs=image)
    return canvas


def targets(count=2, steps=3, seed=1):
    prog = Discs(steps=steps)
    return prog.render(prog.sample_prior(count, generator=torch.Generator().manual_seed(seed)))


def test_traced_structure_and_priors_equal_the_subclass():
    sub, prog = Discs(steps=3), sp.programs.PyroProgram(discs_model)
    assert prog.action_space == sub.action_space and prog.action_space[1].kind == "location"
    assert (prog.steps, prog.channels, prog.image_size) == (3, 1, 32) and prog.dependent == {}
    assert torch.equal(prog.prior_table().log_probs, sub.prior_table().log_probs)
    actions = sub.sample_prior(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(prog.render(actions), sub.render(actions)) and prog.renders == 5
    assert torch.equal(prog.log_prior(actions), sub.log_prior(actions))
    # A prefix is drawn by the model itself, asked for fewer steps.
    prefix = {name: value[:, :2] for name, value in actions.items()}
    assert torch.equal(prog.render(prefix), sub.render(prefix))
    # Non-uniform priors are read from the model.
    skewed = sp.programs.PyroProgram(lambda image=None, batch_size=1, steps=1: masked_discs(image, batch_size, steps))
    assert torch.allclose(skewed.prior(0, "present").probs, torch.tensor([0.3, 0.7]))
    # A site marks its component ordered, for local search moves.
    ordered = sp.programs.PyroProgram(bad(lambda n, t, s: (*plain(n, t, s)[:2], {"ordered": n == "radius"})))
    assert [c.name for c in ordered.action_space if c.ordered] == ["radius"]


@pytest.mark.parametrize("engine", [
    sp.inference.Importance(progress=False),
    sp.inference.MCMC(chains=4, progress=False),
    sp.inference.SMC(progress=False),
    sp.inference.SMC(rejuvenation_moves=1, progress=False),
], ids=["importance", "mcmc", "smc", "smc-rejuvenation"])
def test_engines_give_the_subclass_numbers_at_equal_renders_and_seeds(engine):
    images = targets()
    sub = engine.infer(Discs(steps=3), images, sp.Budget(renders=240), seed=0)
    # The same model draws from the same random streams in the same order, and scores with the
    # same PixelNormal: the very same numbers.
    same = engine.infer(sp.programs.PyroProgram(discs_model), images, sp.Budget(renders=240), seed=0)
    assert torch.equal(same.l2, sub.l2) and torch.equal(same.curve.l2, sub.curve.l2)
    assert same.renders.tolist() == sub.renders.tolist() == [240, 240]
    for name in sub.actions:
        assert torch.equal(same.actions[name], sub.actions[name])
    if sub.log_weights is not None:
        assert torch.equal(same.log_weights, sub.log_weights)
    # Pyro's Normal computes the same density in another order of float operations: the draws
    # are the same, the log weights equal to rounding (which could flip an MH decision or a
    # resampling only at a tie, which these runs do not meet).
    other = engine.infer(sp.programs.PyroProgram(normal_discs), images, sp.Budget(renders=240), seed=0)
    assert torch.equal(other.l2, sub.l2)
    if sub.log_weights is not None:
        torch.testing.assert_close(other.log_weights, sub.log_weights, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(other.log_evidence, sub.log_evidence, rtol=1e-5, atol=1e-3)


def test_compare_and_exact_enumeration_run_on_it():
    images = targets(count=1)
    prog = sp.programs.PyroProgram(normal_discs)
    comparison = sp.compare(prog, images, {"importance": sp.inference.Importance(progress=False),
                                           "smc": sp.inference.SMC(progress=False)}, budgets=[30])
    assert sorted(comparison.results) == [("importance", 30, 0), ("smc", 30, 0)]
    one_step = sp.programs.PyroProgram(lambda image=None, batch_size=1, steps=1: normal_discs(image, batch_size, steps))
    image = targets(count=2, steps=1)
    exact, reference = (sp.inference.enumerate_posterior(p, image) for p in (one_step, Discs(steps=1)))
    torch.testing.assert_close(exact.log_evidence, reference.log_evidence, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(exact.marginals["step_0/centre"], reference.marginals["step_0/centre"])


def test_spiral_fits_infers_and_guides_on_a_pyro_model():
    torch.manual_seed(0)
    prog = sp.programs.PyroProgram(lambda image=None, batch_size=1, steps=2: normal_discs(image, batch_size, steps))
    images = targets(count=16, steps=2)
    config = SpiralConfig.small(policy={"channels": 8, "lstm_size": 32}, reward={"kind": "l2"}, a2c={"batch_size": 8})
    agent = sp.inference.Spiral(prog, config=config, device="cpu")
    agent.fit(images, 2, progress=False)
    result = agent.infer(prog, images[:3], sp.Budget(renders=4), seed=0)
    assert result.renders.tolist() == [4] * 3
    torch.testing.assert_close(result.images, prog.render(result.actions))
    guided = sp.inference.Importance(agent.guide, progress=False).infer(prog, images[:2], sp.Budget(renders=12), seed=0)
    assert guided.renders.tolist() == [12, 12] and torch.isfinite(guided.log_evidence).all()
    for engine in (sp.inference.SMC(agent.proposal, progress=False), agent.smc(progress=False)):
        smc = engine.infer(prog, images[:2], sp.Budget(renders=8), seed=0)
        assert smc.renders.tolist() == [8, 8] and torch.isfinite(smc.log_evidence).all()


def test_masked_sites_and_dependent_priors_have_the_users_log_joint_and_run_on_every_engine():
    prog = sp.programs.PyroProgram(masked_discs)
    # A masked site's prior is fixed: only a prior that changes with earlier sites is not.
    assert prog.dependent == {"step_1/present": "its prior changes with earlier sites"}
    images = targets(count=2, steps=2)
    # The program's model has the user's priors, dependent ones included; a masked site is drawn
    # from its prior and counted (integrated out), so the joint is the user's without the masks.
    with pyro.plate("particles", 5, dim=-2):
        model_trace = poutine.trace(prog.model).get_trace(images)
    actions = prog.actions_from_trace(model_trace)
    values = {name: model_trace.nodes[name]["value"].reshape(-1) for name in prog.site_names()}
    user_trace = poutine.trace(poutine.condition(masked_discs, values)).get_trace(images.repeat(5, 1, 1, 1))
    unmasked = sum(node["fn"].log_prob(node["value"]).sum() for node in user_trace.nodes.values()
                   if node["type"] == "sample")
    assert torch.allclose(model_trace.log_prob_sum(), unmasked)
    assert actions["present"].shape == (5, 2, 2)
    # log_prior re-runs the user's model on the programs: the same log joint of the latent sites.
    latent = sum(user_trace.nodes[name]["fn"].log_prob(user_trace.nodes[name]["value"]) for name in prog.site_names())
    torch.testing.assert_close(prog.log_prior(actions).reshape(-1), latent.reshape(-1))
    for engine in (sp.inference.Importance(progress=False), sp.inference.MCMC(progress=False),
                   sp.inference.SMC(progress=False, rejuvenation_moves=1)):
        result = engine.infer(prog, images, sp.Budget(renders=50), seed=0)
        assert 48 <= int(result.renders.min()) <= int(result.renders.max()) <= 50 and bool((result.l2 < 0.2).all())
    # Only the fixed per-step tables are refused, naming the site; the methods engines use re-run the model.
    with pytest.raises(ValueError, match=r"site 'step_1/present' of model masked_discs has none \(its prior changes"):
        prog.prior_table()
    with pytest.raises(ValueError, match="step_1/present"):
        prog.prior(1, "present")


def marks(image=None, batch_size=1, steps=2):
    """Up to two marks on a 4x4 canvas, each in one of four 2x2 blocks: a mark is likelier after one
    that is there (a prior that depends on an earlier site), and an absent mark's block is masked."""
    if image is not None:
        batch_size = image.shape[0]
    canvas = torch.zeros(batch_size, 1, 4, 4)
    with pyro.plate("targets", batch_size):
        previous = torch.zeros(batch_size, dtype=torch.long)
        for t in range(steps):
            present = pyro.sample(f"step_{t}/present", dist.Categorical(torch.tensor([[0.6, 0.4], [0.2, 0.8]])[previous]))
            with poutine.mask(mask=present == 1):
                block = pyro.sample(f"step_{t}/block", dist.Categorical(torch.tensor([0.4, 0.3, 0.2, 0.1])),
                                    infer={"location": (2, 2)})
            mark = torch.nn.functional.one_hot(block, 4).float().view(-1, 1, 2, 2).repeat_interleave(2, 2)
            mark = mark.repeat_interleave(2, 3) * (0.5 + 0.5 * t) * present.view(-1, 1, 1, 1)
            canvas = torch.maximum(canvas, mark)
            previous = present
        pyro.sample("image", dist.Normal(canvas, 0.3).to_event(3), obs=image)
    return canvas


@pytest.fixture(scope="module")
def dependent_marks():
    prog = sp.programs.PyroProgram(marks)
    assert set(prog.dependent) == {"step_1/present"}
    # Faint marks: an uncertain posterior over presence, blocks and which step drew what.
    images = torch.zeros(2, 1, 4, 4)
    images[0, 0, :2, :2], images[1, 0, 2:, :2], images[1, 0, :2, 2:] = 0.3, 0.4, 0.6
    return prog, images, sp.inference.enumerate_posterior(prog, images)


def test_priors_that_depend_on_earlier_sites_are_drawn_and_scored_by_the_model(dependent_marks):
    prog, _, _ = dependent_marks
    every = torch.cartesian_prod(*[torch.arange(n) for n in (2, 4, 2, 4)])  # present, block at steps 0 and 1
    programs = {"present": every[:, [0, 2]], "block": every[:, [1, 3]]}
    # p(a) by hand: presence 0.6/0.4, then 0.2/0.8 after a mark; blocks 0.4 .. 0.1, masked or not.
    block_prior = torch.tensor([0.4, 0.3, 0.2, 0.1])
    present, block = programs["present"], programs["block"]
    by_hand = torch.tensor([0.6, 0.4])[present[:, 0]] * torch.tensor([[0.6, 0.4], [0.2, 0.8]])[present[:, 0], present[:, 1]]
    torch.testing.assert_close(prog.log_prior(programs), (by_hand * block_prior[block].prod(-1)).log())
    torch.testing.assert_close(prog.log_prior({n: v[:, :1] for n, v in programs.items()}),
                               (torch.tensor([0.6, 0.4])[present[:, 0]] * block_prior[block[:, 0]]).log())
    with pytest.raises(ValueError, match=r"history must hold \{name: LongTensor\[\*batch, 1\]\}"):
        prog.step_prior(1, programs)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 1\]"):
        prog.step_prior(2, programs)
    # One step's prior given the history, scored and drawn.
    history = {name: value[:, :1] for name, value in programs.items()}
    step = {name: value[:, 1] for name, value in programs.items()}
    _, log_p = prog.step_prior(1, history, step)
    torch.testing.assert_close(log_p, prog.log_prior(programs) - prog.log_prior(history))
    drawn, log_p = prog.step_prior(1, {n: torch.ones(4000, 1, dtype=torch.long) for n in ("present", "block")})
    assert abs(float(drawn["present"].float().mean()) - 0.8) < 0.03 and log_p.shape == (4000,)
    # Whole programs from the prior, reproducible from a generator, the global stream untouched.
    state = torch.random.get_rng_state()
    first = prog.sample_prior(4000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first["block"], prog.sample_prior(4000, generator=torch.Generator().manual_seed(3))["block"])
    after_present = first["present"][first["present"][:, 0] == 1, 1].float().mean()
    after_absent = first["present"][first["present"][:, 0] == 0, 1].float().mean()
    assert abs(float(after_present) - 0.8) < 0.04 and abs(float(after_absent) - 0.4) < 0.04
    # Block moves draw from fixed tables of full support, half prior, half uniform.
    table = prog.proposal_table()
    torch.testing.assert_close(table.log_probs[:2].exp(), torch.tensor([0.55, 0.45]))
    torch.testing.assert_close(table.log_probs[4:8].exp(), torch.tensor([0.325, 0.275, 0.225, 0.175]))


def test_mcmc_on_dependent_and_masked_priors_agrees_with_enumeration(dependent_marks):
    prog, images, exact = dependent_marks
    pyro.set_rng_seed(0)
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=128, blocks="mixed")
    mcmc = pyro.infer.MCMC(kernel, num_samples=300, warmup_steps=50, disable_progbar=True)
    mcmc.run(images)
    samples = mcmc.get_samples()
    worst = 0.0
    for name in prog.site_names():
        empirical = torch.nn.functional.one_hot(samples[name], exact.marginals[name].shape[-1]).float().mean((0, 1))
        worst = max(worst, float(0.5 * (empirical - exact.marginals[name]).abs().sum(-1).max()))
    assert worst < 0.05
    # The posterior is far from the prior here, so agreeing with it says something.
    prior = prog.sample_prior(2000, generator=torch.Generator().manual_seed(0))
    far = max(float(0.5 * (torch.nn.functional.one_hot(prior["present"][:, t], 2).float().mean(0)
                           - exact.marginals[f"step_{t}/present"]).abs().sum(-1).max()) for t in range(2))
    assert far > 0.2


@pytest.mark.parametrize("proposal, moves", [(None, 0), ("guide", 0), (None, 1)], ids=["prior", "guide", "moves"])
def test_smc_on_dependent_and_masked_priors_has_an_unbiased_evidence(dependent_marks, proposal, moves):
    prog, images, exact = dependent_marks

    def uniform_guide(image):
        with pyro.plate("targets", image.shape[0], dim=-1):
            for t in range(2):
                pyro.sample(f"step_{t}/present", dist.Categorical(logits=torch.zeros(2)))
                pyro.sample(f"step_{t}/block", dist.Categorical(logits=torch.zeros(4)))

    replicates = 1000  # independent runs per target; the second target's estimates are heavy-tailed
    batch = images.repeat_interleave(replicates, 0)
    engine = sp.inference.SMC(uniform_guide if proposal else None, rejuvenation_moves=moves, cooling=None,
                              progress=False)
    result = engine.infer(prog, batch, sp.Budget(renders=200), seed=1)
    ratio = (result.log_evidence - exact.log_evidence.repeat_interleave(replicates)).exp().view(2, replicates)
    # Standard errors of the means are about 0.005 and 0.04; a wrong prior term is off by a factor.
    assert ((ratio.mean(1) - 1).abs() < torch.tensor([0.03, 0.15])).all(), ratio.mean(1)


def bad(change):
    """``discs_model`` of one step with one thing changed; ``change(name, t)`` returns (name, distribution, infer)."""
    def model(image=None, batch_size=1, steps=2):
        if image is not None:
            batch_size = image.shape[0]
        drawn = {name: [] for name in SIZES}
        with pyro.plate("targets", batch_size):
            for t in range(steps):
                for name, size in SIZES.items():
                    site, fn, infer = change(name, t, size)
                    if site is not None:
                        drawn[name].append(pyro.sample(site, fn, infer=infer).long())
            canvas = draw_discs({name: torch.stack(values, -1) for name, values in drawn.items() if values})
            pyro.sample("image", dist.Normal(canvas, 0.5).to_event(3), obs=image)
        return canvas
    return model


def plain(name, t, size):
    return f"step_{t}/{name}", dist.Categorical(logits=torch.zeros(size)), {}


@pytest.mark.parametrize("model, message", [
    (lambda image=None, batch_size=1: torch.zeros(batch_size, 1, 8, 8), "has no site 'image'"),
    (bad(lambda n, t, s: (f"step_{t}/{n}", dist.Uniform(0, s), {}) if n == "radius" else plain(n, t, s)),
     "site 'step_0/radius' of model model draws from Uniform; latent sites must be Categorical"),
    (bad(lambda n, t, s: (*plain(n, t, s)[:2], {"location": (4, 16)} if n == "centre" else {})),
     r"component 'centre': infer=\{'location': ...\} must be \(rows, cols\) of a square grid"),
    (lambda image=None, batch_size=1: pyro.sample("image", dist.Normal(torch.zeros(1, 8, 8), 1).to_event(3)),
     r"must return its canvas \(batch_size, C, H, W\), got \(1, 8, 8\)"),
    (lambda image=None, batch_size=1: pyro.sample("image", dist.Normal(torch.zeros(batch_size, 1, 8, 4), 1)
                                                  .to_event(3)), "programs have square images"),
    (lambda image=None, batch_size=1: pyro.sample("image", dist.Normal(torch.zeros(batch_size, 1, 8, 8), 1)),
     r"has event shape \(\), expected the canvas's \(1, 8, 8\)"),
    (bad(lambda n, t, s: (*plain(n, t, s)[:2], {"ordered": "yes"} if n == "radius" else {})),
     r"site 'step_0/radius' of model model: infer=\{'ordered': ...\} must be True or False, got 'yes'"),
], ids=["no-image", "not-categorical", "bad-location", "canvas-without-batch", "not-square", "no-event",
        "ordered-not-a-bool"])
def test_models_outside_the_contract_get_errors_naming_the_problem(model, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sp.programs.PyroProgram(model)


@pytest.mark.parametrize("model, message", [
    (bad(lambda n, t, s: ("radius", *plain(n, t, s)[1:]) if n == "radius" else plain(n, t, s)),
     "has a site 'radius'; latent sites must be named step_{t}/{component}"),
    (bad(lambda n, t, s: plain("size" if n == "radius" and t else n, t, s)),
     r"step 1 of model model draws components \['present', 'centre', 'size', 'intensity'\]"),
    (bad(lambda n, t, s: (f"step_{t + 1}/{n}", *plain(n, t, s)[1:])), r"steps must be 0 .. 2 without gaps"),
], ids=["other-name", "other-components", "step-gap"])
def test_models_without_steps_run_one_program_at_a_time_and_engines_that_need_steps_say_why(model, message):
    prog = sp.programs.PyroProgram(model)
    assert not prog.fixed_structure
    with pytest.raises(ValueError, match=f"the mcmc engine needs a program of fixed steps.*{message}.*TraceMH"):
        sp.inference.MCMC(progress=False).infer(prog, torch.zeros(1, 1, 32, 32), sp.Budget(renders=8))
    result = sp.inference.TraceMH(progress=False).infer(prog, torch.zeros(1, 1, 32, 32), sp.Budget(renders=8))
    assert result.renders.tolist() == [8] and result.l2.shape == (1,)


def test_drawing_part_way_needs_a_steps_keyword_and_canvases_must_keep_their_shape():
    def fixed(image=None, batch_size=1):
        return discs_model(image, batch_size, steps=2)

    prog = sp.programs.PyroProgram(fixed)
    with pytest.raises(ValueError, match=r"give it a keyword steps \(def fixed\(image=None, batch_size=1, steps=2\)"):
        sp.inference.SMC(progress=False).infer(prog, targets(count=1, steps=2), sp.Budget(renders=20), seed=0)
    assert sp.inference.Importance(progress=False).infer(prog, targets(count=1, steps=2), sp.Budget(renders=20))

    def shrinking(image=None, batch_size=1, steps=2):
        canvas = discs_model(image, batch_size, steps)
        return canvas if batch_size == 1 or image is not None else canvas[:1]

    with pytest.raises(ValueError, match=r"returned a canvas of shape \(1, 1, 32, 32\) for batch_size=3"):
        sp.programs.PyroProgram(shrinking).render({c.name: torch.zeros(3, 2, dtype=torch.long)
                                                   for c in Discs.action_space})
    with pytest.raises(TypeError, match="model must be a Pyro model function"):
        sp.programs.PyroProgram("discs")
    with pytest.raises(ValueError, match="scores only canvases it has just drawn"):
        sp.programs.PyroProgram(normal_discs).log_likelihood(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))


def test_plots_are_an_attribute_and_mcmc_samples_are_integers():
    assert sp.plots.plot_curves is not None
    prog = sp.programs.PyroProgram(discs_model)
    kernel = sp.inference.BlockedMetropolisHastings(prog, chains=2)
    mcmc = pyro.infer.MCMC(kernel, num_samples=4, warmup_steps=2, disable_progbar=True)
    mcmc.run(targets(count=1))
    samples = mcmc.get_samples()
    assert samples["step_0/centre"].dtype == torch.long and samples["log_joint"].is_floating_point()
    assert kernel.best_l2 is not None and kernel.best_images.shape == (1, 1, 32, 32)
    assert kernel.best_actions["centre"].shape == (1, 3)
