"""Overhead of the search engines per render, over the bare renderer doing the same drawing.

MCMC renders whole programs: its bare equivalent is ``prog.draw`` of as many programs
(``chains * B`` per transition). SMC advances canvases one stroke at a time: its bare
equivalent is the program's step-wise protocol, ``stepwise.initial`` plus ``steps`` rounds
of ``stepwise.advance`` and ``stepwise.canvas`` on ``particles * B`` canvases. Each case
runs one warm-up round (which also compiles the engines' own kernels) and 5 timed rounds;
the ratio of the medians, engine time / bare time, is printed at the end.

Run: ``.venv/bin/python -m pytest benchmarks/bench_search.py --benchmark-enable -s``
"""

import pytest
import torch

import spiral_ppl as sp

STEPS, CHAINS, TRANSITIONS, PARTICLES = 10, 4, 5, 8
SECONDS: dict[tuple[str, int], float] = {}


@pytest.fixture(scope="module")
def prog():
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=64, grid_size=32), steps=STEPS)
    prog.draw(_random_programs(prog, 2))  # compile the brush kernel outside the timings
    return prog


def _random_programs(prog, count, generator=None):
    return {c.name: torch.randint(c.size, (count, STEPS), generator=generator) for c in prog.action_space}


def _targets(prog, batch):
    return prog.draw(_random_programs(prog, batch, torch.Generator().manual_seed(0)))


def _timed(benchmark, key, function):
    benchmark.pedantic(function, rounds=5, warmup_rounds=1)
    SECONDS[key] = benchmark.stats.stats.median


@pytest.mark.parametrize("batch", [64, 256])
def test_bare_render(benchmark, prog, batch):
    programs = _random_programs(prog, CHAINS * batch)

    def draw_like_mcmc():
        for _ in range(1 + TRANSITIONS):  # starting the chains, then each transition
            prog.draw(programs)

    _timed(benchmark, ("bare render", batch), draw_like_mcmc)


@pytest.mark.parametrize("batch", [64, 256])
def test_mcmc(benchmark, prog, batch):
    images, budget = _targets(prog, batch), sp.Budget(renders=CHAINS * (1 + TRANSITIONS))
    engine = sp.inference.MCMC.paper_baseline(chains=CHAINS, progress=False)
    _timed(benchmark, ("mcmc", batch), lambda: engine.infer(prog, images, budget, seed=0))


@pytest.mark.parametrize("batch", [64, 256])
def test_bare_stepwise(benchmark, prog, batch):
    actions = _random_programs(prog, PARTICLES * batch)

    def advance_like_smc():
        stepwise = prog.stepwise
        state = stepwise.initial(PARTICLES * batch)
        for t in range(STEPS):
            state = stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
            stepwise.canvas(state)

    _timed(benchmark, ("bare stepwise", batch), advance_like_smc)


@pytest.mark.parametrize("batch", [64, 256])
def test_smc(benchmark, prog, batch):
    images, budget = _targets(prog, batch), sp.Budget(renders=PARTICLES * STEPS)
    engine = sp.inference.SMC.paper_baseline(progress=False)
    _timed(benchmark, ("smc", batch), lambda: engine.infer(prog, images, budget, seed=0))


def test_report_overhead():
    if not SECONDS:
        pytest.skip("run with --benchmark-enable")
    print("\nengine  batch  engine s  bare s  overhead")
    for engine, bare in (("mcmc", "bare render"), ("smc", "bare stepwise")):
        for batch in (64, 256):
            if (engine, batch) in SECONDS and (bare, batch) in SECONDS:
                ratio = SECONDS[(engine, batch)] / SECONDS[(bare, batch)]
                print(f"{engine:6}  {batch:5}  {SECONDS[(engine, batch)]:8.3f}  {SECONDS[(bare, batch)]:6.3f}  {ratio - 1:+8.1%}")
