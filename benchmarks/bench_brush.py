"""Brush throughput: strokes per second at 64x64, eager and compiled, CPU (and CUDA if present).

Run: ``.venv/bin/python -m pytest benchmarks/bench_brush.py --benchmark-enable``
Strokes per second is ``batch / mean time`` (also stored as ``extra_info``).
"""

import pytest
import torch

import spiral_ppl as sp

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BATCHES = {"cpu": [1, 64, 1024], "cuda": [1, 1024, 65536]}


def cases():
    for device in DEVICES:
        for batch in BATCHES[device]:
            for compiled in (False, True):
                mode = "compiled" if compiled else "eager"
                yield pytest.param(device, batch, compiled, id=f"{device}-b{batch}-{mode}")


@pytest.mark.parametrize("device, batch, compiled", list(cases()))
def test_brush_strokes_per_second(benchmark, device, batch, compiled):
    brush = sp.renderers.Brush(canvas_size=64, grid_size=32, compile=compiled)
    generator = torch.Generator().manual_seed(0)
    action = {c.name: torch.randint(0, c.size, (batch,), generator=generator).to(device) for c in brush.action_space}
    action["flag"].fill_(1)
    state = brush.initial_state(batch, device=device)
    brush.step(state, action)  # compile and warm up outside the timing

    def stroke():
        canvas = brush.step(state, action).canvas
        if device == "cuda":
            torch.cuda.synchronize()
        return canvas

    benchmark.pedantic(stroke, rounds=5 if batch >= 1024 else 20, iterations=1, warmup_rounds=1)
    benchmark.extra_info["strokes_per_second"] = batch / benchmark.stats.stats.mean
