"""Paint engines on the CPU: Brush (compiled, eager) and MyPaint (in process, 2 workers) at
batch 1, 64 and 1024, every stroke inked; plus Brush's fidelity to MyPaint.

Run explicitly::

    SPIRAL_PPL_COMPILE=1 .venv/bin/python -m pytest benchmarks/bench_paint.py --benchmark-enable \\
        --benchmark-columns=mean,rounds --benchmark-group-by=param:batch

Each benchmark records ``strokes_per_second`` in its extra info; the side-by-side ratios of
one run are printed by ``benchmarks/brush_vs_mypaint.py --speed``.
"""

import pytest
from brush_vs_mypaint import DRY_BRUSH_LOOK, HARD_PEN, fidelity, program_sets, random_programs

import spiral_ppl as sp

#: Steps per program at each batch size, so that every call paints 20 to 1024 strokes.
STEPS = {1: 20, 64: 2, 1024: 1}

ENGINES = {
    "brush-compiled": lambda: sp.renderers.Brush(compile=True, **DRY_BRUSH_LOOK),
    "brush-eager": lambda: sp.renderers.Brush(compile=False, **DRY_BRUSH_LOOK),
    "mypaint": lambda: sp.renderers.MyPaint(),
    "mypaint-2-workers": lambda: sp.renderers.MyPaint(workers=2),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request):
    renderer = ENGINES[request.param]()
    yield renderer
    if isinstance(renderer, sp.renderers.MyPaint):
        renderer.close()


@pytest.mark.parametrize("batch", sorted(STEPS))
def test_strokes_per_second(benchmark, engine, batch):
    steps = STEPS[batch]
    actions = random_programs(engine, batch, steps, seed=7)
    actions["flag"][:] = 1
    engine.render(actions)  # warm up: compile the kernel, start the workers
    benchmark.pedantic(engine.render, args=(actions,), rounds=3, iterations=1)
    benchmark.extra_info["strokes_per_second"] = batch * steps / benchmark.stats.stats.mean


def test_fidelity_to_mypaint(benchmark):
    mypaint = sp.renderers.MyPaint()
    sets = program_sets(mypaint, seed=50)
    references = {name: mypaint.render(actions) for name, actions in sets.items()}
    after = benchmark.pedantic(fidelity, args=(DRY_BRUSH_LOOK, references, sets), rounds=1, iterations=1)
    before = fidelity(HARD_PEN, references, sets)
    for name in sets:
        benchmark.extra_info[f"l2 before tuning, {name}"] = before[name]
        benchmark.extra_info[f"l2 after tuning, {name}"] = after[name]
        assert after[name] < before[name], "the tuned Brush must be closer to libmypaint than the hard pen"
