"""Cost per render of a plain Pyro model (``sp.programs.PyroProgram``) against the same grammar
written as a ``Program`` subclass (``tests/grammars.py``: ``Discs`` and ``discs_model``).

Each engine runs on 3-step Discs for 16 targets at 240 renders per target, on the subclass,
on the Pyro model observed with ``PixelNormal`` (scored from the canvas alone) and on the
Pyro model observed with Pyro's ``Normal(canvas, 0.5).to_event(3)`` (scored from the
model's own run). One warm-up round and 5 timed rounds each; the report prints the median
seconds per render and the ratio to the subclass (the target: at most 2x).

Run: ``.venv/bin/python -m pytest benchmarks/bench_pyro_program.py --benchmark-enable -s``
"""

import sys
from pathlib import Path

import pytest
import torch

import spiral_ppl as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.grammars import Discs, discs_model, normal_discs  # noqa: E402

TARGETS, RENDERS = 16, 240
SECONDS: dict[tuple[str, str], float] = {}


PROGRAMS = {
    "subclass": lambda: Discs(steps=3),
    "pyro-pixelnormal": lambda: sp.programs.PyroProgram(discs_model),
    "pyro-normal": lambda: sp.programs.PyroProgram(normal_discs),
}
ENGINES = {
    "importance": lambda: sp.inference.Importance(progress=False),
    "mcmc": lambda: sp.inference.MCMC.paper_baseline(chains=8, progress=False),
    "smc": lambda: sp.inference.SMC.paper_baseline(progress=False),
}


@pytest.fixture(scope="module")
def images():
    prog = Discs(steps=3)
    return prog.render(prog.sample_prior(TARGETS, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_engine(benchmark, images, program, engine):
    prog, run = PROGRAMS[program](), ENGINES[engine]()
    benchmark.pedantic(lambda: run.infer(prog, images, sp.Budget(renders=RENDERS), seed=0), rounds=5, warmup_rounds=1)
    SECONDS[(engine, program)] = benchmark.stats.stats.median


def test_report_cost_per_render():
    if not SECONDS:
        pytest.skip("run with --benchmark-enable")
    renders = TARGETS * RENDERS
    print(f"\nmicroseconds per render ({renders} renders per run) and ratio to the subclass")
    print("engine      " + "".join(f"{program:>22}" for program in PROGRAMS))
    for engine in ENGINES:
        base = SECONDS.get((engine, "subclass"))
        cells = []
        for program in PROGRAMS:
            seconds = SECONDS.get((engine, program))
            cells.append(" " * 22 if seconds is None or base is None else
                         f"{1e6 * seconds / renders:12.1f} ({seconds / base:4.2f}x)".rjust(22))
        print(f"{engine:12}" + "".join(cells))
