"""Models whose structure varies: traces, exact enumeration, importance sampling and trace MH."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import spiral_ppl as sp
from tests.grammars import dots_and_bars, shapes_model

#: A dot and a bar on the bottom row: the posterior spreads over one bar, a dot and a bar
#: (in either order), two bars, ... (43 runs in all).
TARGET = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])


@pytest.fixture(scope="module")
def marks():
    return sp.programs.PyroProgram(dots_and_bars)


@pytest.fixture(scope="module")
def exact(marks):
    return sp.inference.enumerate_posterior(marks, TARGET)


def test_a_model_whose_runs_visit_different_sites_runs_one_program_at_a_time(marks):
    assert not marks.fixed_structure
    assert "visit different sites" in marks.structure_note
    assert repr(marks) == "PyroProgram(dots_and_bars, one program at a time, image=1x2)"
    assert sp.programs.PyroProgram(shapes_model).fixed_structure is False
    # A grammar of fixed steps keeps them.
    from tests.grammars import discs_model
    assert sp.programs.PyroProgram(discs_model).fixed_structure


def test_engines_that_need_steps_refuse_it_and_name_the_ones_that_do_not(marks):
    target = TARGET
    for attempt in (
        lambda: sp.inference.MCMC().infer(marks, target, sp.Budget(renders=10)),
        lambda: sp.inference.SMC().infer(marks, target, sp.Budget(renders=10)),
        lambda: sp.inference.BlockedMetropolisHastings(marks),
        lambda: sp.inference.Spiral(marks),
        lambda: marks.render({}),
        lambda: marks.sample_prior(2),
    ):
        with pytest.raises(ValueError, match="runs one program at a time: its runs visit different sites.*TraceMH"):
            attempt()
    with pytest.raises(ValueError, match="without a guide"):
        sp.inference.Importance(guide=lambda image: None).infer(marks, target, sp.Budget(renders=10))
    with pytest.raises(ValueError, match="one target"):
        marks.model(torch.zeros(2, 1, 2, 2))


def test_a_run_keeps_forces_and_draws_fresh_what_it_must(marks):
    trace = sp.programs.run_trace(marks, TARGET, forced={"count": 2, "mark_0/kind": 0, "mark_0/cell": 2,
                                                         "mark_1/kind": 1, "mark_1/row": 1})
    assert trace.fresh == frozenset()
    assert trace.canvas.tolist() == [[[[0.0, 0.0], [1.0, 1.0]]]]
    expected_prior = math.log(0.3) + math.log(0.6) + math.log(0.25) + math.log(0.4) + math.log(0.3)
    assert trace.log_prior == pytest.approx(expected_prior, abs=1e-6)
    error = ((trace.canvas - TARGET) ** 2).sum()
    normal = -0.5 * error / 0.25 - 4 * math.log(0.5 * math.sqrt(2 * math.pi))
    assert trace.log_likelihood == pytest.approx(float(normal), abs=1e-5)
    # Changing the first mark to a bar drops its cell and draws its row afresh; the second mark is kept.
    changed = sp.programs.run_trace(marks, TARGET, forced={"mark_0/kind": 1},
                                    kept={name: value for name, value in trace.choices.items() if name != "mark_0/kind"})
    assert changed.fresh == frozenset({"mark_0/row"})
    assert "mark_0/cell" not in changed.choices and changed.choices["mark_1/row"] == 1
    with pytest.raises(ValueError, match="not visited"):
        sp.programs.run_trace(marks, TARGET, forced={"count": 0, "mark_0/kind": 1})
    with pytest.raises(ValueError, match="outside its values"):
        sp.programs.run_trace(marks, TARGET, forced={"count": 5})


def test_enumeration_visits_every_run_once_and_weighs_it_by_its_joint(marks, exact):
    runs = exact.traces[0]
    assert len(runs) == 1 + 6 + 36
    assert math.fsum(runs.values()) == pytest.approx(1.0)
    # The empty canvas's posterior, by hand: prior 0.3 times its likelihood, over the evidence.
    blank = -0.5 * float((TARGET**2).sum()) / 0.25 - 4 * math.log(0.5 * math.sqrt(2 * math.pi))
    assert runs[(("count", 0),)] == pytest.approx(0.3 * math.exp(blank - float(exact.log_evidence[0])), rel=1e-4)
    assert exact.marginals["count"].sum().item() == pytest.approx(1.0)
    # A site only some runs visit: its row sums to the probability of visiting it.
    visits_cell = math.fsum(p for key, p in runs.items() if any(address == "mark_0/cell" for address, _ in key))
    assert exact.marginals["mark_0/cell"].sum().item() == pytest.approx(visits_cell, rel=1e-5)
    with pytest.raises(ValueError, match="max_programs"):
        sp.inference.enumerate_posterior(marks, TARGET, max_programs=40)


def test_importance_sampling_agrees_with_enumeration(marks, exact):
    result = sp.inference.Importance().infer(marks, TARGET, sp.Budget(renders=6000), seed=0)
    estimate = sp.programs.empirical_posterior(result.diagnostics["samples"][0], result.log_weights[:, 0])
    assert sp.programs.total_variation(estimate, exact.traces[0]) < 0.05
    assert float(result.log_evidence[0]) == pytest.approx(float(exact.log_evidence[0]), abs=0.1)
    assert result.renders.tolist() == [6000] and result.actions == {}
    assert result.l2.tolist() == [0.0]
    assert sp.programs.run_trace(marks, forced=result.choices[0]).canvas.equal(result.images)


def test_trace_mh_agrees_with_enumeration(marks, exact):
    result = sp.inference.TraceMH(chains=4).infer(marks, TARGET, sp.Budget(renders=12000), seed=0)
    estimate = sp.programs.empirical_posterior(result.diagnostics["samples"][0])
    assert sp.programs.total_variation(estimate, exact.traces[0]) < 0.05
    counts = torch.zeros(3)
    for choices in result.diagnostics["samples"][0]:
        counts[choices["count"]] += 1
    assert torch.allclose(counts / counts.sum(), exact.marginals["count"][0], atol=0.04)
    assert result.renders.tolist() == [12000]
    assert 0.1 < float(result.diagnostics["acceptance_rate"][0]) < 0.9
    assert result.curve.l2[-1].tolist() == result.l2.tolist() == [0.0]


def test_the_acceptance_ratio_of_a_birth_move_counts_sites_and_fresh_draws(marks):
    """From one dot to two (the second drawn fresh): the ratio by hand."""
    one = sp.programs.run_trace(marks, TARGET, forced={"count": 1, "mark_0/kind": 0, "mark_0/cell": 2})
    two = sp.programs.run_trace(marks, TARGET, forced={"count": 2, "mark_1/kind": 1, "mark_1/row": 1},
                                kept=one.choices)
    two.fresh = frozenset({"mark_1/kind", "mark_1/row"})  # as if the move had drawn them
    from spiral_ppl.inference.trace_mh import log_acceptance
    by_hand = (two.log_joint - one.log_joint + math.log(3) - math.log(5) - math.log(0.4) - math.log(0.3))
    assert log_acceptance(one, two, "count") == pytest.approx(by_hand, abs=1e-5)
    # The reverse move (a death) draws nothing and finds the second mark stale.
    assert log_acceptance(two, one, "count") == pytest.approx(-by_hand, abs=1e-5)


def test_trace_mh_on_a_program_of_fixed_steps_agrees_with_enumeration():
    def dots(image=None, batch_size=1, steps=2):
        batch_size = image.shape[0] if image is not None else batch_size
        canvas = torch.zeros(batch_size, 1, 3, 3)
        with pyro.plate("targets", batch_size):
            for t in range(steps):
                cell = pyro.sample(f"step_{t}/cell", dist.Categorical(logits=torch.zeros(9)), infer={"location": (3, 3)})
                canvas = canvas.flatten(1).scatter(1, cell[:, None], 1.0).view(-1, 1, 3, 3)
            pyro.sample("image", dist.Normal(canvas, 0.6).to_event(3), obs=image)
        return canvas

    prog = sp.programs.PyroProgram(dots)
    assert prog.fixed_structure
    target = prog.render({"cell": torch.tensor([[0, 8]])})
    exact = sp.inference.enumerate_posterior(prog, target)
    result = sp.inference.TraceMH(chains=2).infer(prog, target, sp.Budget(renders=4000), seed=1)
    counts = torch.zeros(9)
    for choices in result.diagnostics["samples"][0]:
        counts[choices["step_0/cell"]] += 1
    assert 0.5 * (counts / counts.sum() - exact.marginals["step_0/cell"][0]).abs().sum() < 0.05
    assert result.actions["cell"].shape == (1, 2) and result.l2.tolist() == [0.0]


def test_compare_runs_the_engines_that_work_from_addresses(marks):
    comparison = sp.compare(marks, TARGET, {"importance": sp.inference.Importance(), "trace-mh": sp.inference.TraceMH()},
                            budgets=[20])
    assert [(record["engine"], record["renders"]) for record in comparison.records] == [("importance", 20.0),
                                                                                         ("trace-mh", 20.0)]


@pytest.mark.parametrize("arguments, message", [
    ({"chains": 0}, "chains must be"),
    ({"warmup": 1.0}, "warmup must be a number in"),
    ({"progress": "yes"}, "progress"),
])
def test_trace_mh_refuses_bad_settings(arguments, message):
    with pytest.raises((TypeError, ValueError), match=message):
        sp.inference.TraceMH(**arguments)


def test_trace_mh_refuses_a_budget_below_its_chains(marks):
    with pytest.raises(ValueError, match="at least 4 renders"):
        sp.inference.TraceMH(chains=4).infer(marks, TARGET, sp.Budget(renders=3))
