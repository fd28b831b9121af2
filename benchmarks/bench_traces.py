"""Cost of running a model one program at a time (``sp.programs.run_trace``), which
``TraceMH`` and ``Importance`` on a model whose structure varies pay per render.

Three rows, on ``tests/grammars.py``'s ``dots_and_bars`` (up to 2 marks, 2x2) and
``shapes_model`` (up to 2 shapes, 6x6) and on the 3-step ``discs_model`` (a grammar of fixed
steps, for the cost against its batched engines):

- a run with Pyro's checks of each distribution (``check=True``, what a user's call does);
- a run as the engines make it (``check=False``: the targets were checked once, and the
  model's distributions on the 16 runs that ``PyroProgram`` traced first);
- for ``discs_model``, a render of batched importance sampling, for the ratio.

Run: ``.venv/bin/python -m pytest benchmarks/bench_traces.py --benchmark-enable -s``
"""

import sys
from pathlib import Path

import pytest

import spiral_ppl as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.grammars import discs_model, dots_and_bars, shapes_model  # noqa: E402

RUNS = 200
MODELS = {"dots_and_bars": dots_and_bars, "shapes_model": shapes_model, "discs_model": discs_model}
MICROSECONDS: dict[tuple[str, str], float] = {}


def target_of(prog):
    return sp.programs.run_trace(prog).canvas


@pytest.mark.parametrize("check", [True, False], ids=["checked", "engine"])
@pytest.mark.parametrize("model", list(MODELS))
def test_run_one_program(benchmark, model, check):
    prog = sp.programs.PyroProgram(MODELS[model])
    image = target_of(prog)

    def runs():
        for _ in range(RUNS):
            sp.programs.run_trace(prog, image, check=check)

    benchmark.pedantic(runs, rounds=5, warmup_rounds=1)
    MICROSECONDS[(model, "checked" if check else "engine")] = benchmark.stats.stats.median / RUNS * 1e6


def test_batched_importance_render(benchmark):
    prog = sp.programs.PyroProgram(discs_model)
    images = target_of(prog).expand(16, -1, -1, -1).contiguous()
    engine = sp.inference.Importance(progress=False)
    benchmark.pedantic(lambda: engine.infer(prog, images, sp.Budget(renders=240), seed=0), rounds=5, warmup_rounds=1)
    MICROSECONDS[("discs_model", "batched")] = benchmark.stats.stats.median / (16 * 240) * 1e6


def test_report():
    if not MICROSECONDS:
        pytest.skip("run with --benchmark-enable")
    print("\nmicroseconds per run: checked, as engines run it (ratio), batched importance (ratio to one at a time)")
    for model in MODELS:
        checked, engine = MICROSECONDS[(model, "checked")], MICROSECONDS[(model, "engine")]
        line = f"{model:>14}: {checked:8.0f} {engine:8.0f} ({checked / engine:.2f}x)"
        if (model, "batched") in MICROSECONDS:
            batched = MICROSECONDS[(model, "batched")]
            line += f" {batched:8.1f} ({engine / batched:.0f}x)"
        print(line)
