"""SPIRAL throughput: agent steps per second of training updates, CPU (and CUDA if present).

An agent step is one action of one episode: an update of ``batch_size`` episodes of
``steps`` actions makes ``batch_size * steps`` agent steps (rollout, rewards, A2C step and,
with the critic reward, one WGAN-GP step). Setting: conditional MNIST-like reconstruction,
64x64 Brush (grid 16), 6 steps, on random digit-sized targets.

Run: ``.venv/bin/python -m pytest benchmarks/bench_spiral.py --benchmark-enable``
Agent steps per second is ``batch * steps / mean time`` (also stored as ``extra_info``).
"""

import pytest
import torch

import spiral_ppl as sp

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BATCHES = {"cpu": [32], "cuda": [64, 1024]}


def cases():
    for device in DEVICES:
        for batch in BATCHES[device]:
            for reward in ("l2", "critic"):
                yield pytest.param(device, batch, reward, id=f"{device}-b{batch}-{reward}")


@pytest.mark.parametrize("device, batch, reward", list(cases()))
def test_spiral_agent_steps_per_second(benchmark, device, batch, reward):
    torch.manual_seed(0)
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=64, grid_size=16), steps=6)
    config = sp.inference.SpiralConfig(batch_size=batch, policy_channels=16, res_blocks=2, lstm_size=128,
                                       location_channels=16, temporal_rewards=True)
    agent = sp.inference.Spiral(prog, reward=reward, config=config, device=device)
    data = prog.render({c.name: torch.randint(0, c.size, (256, 6)) for c in prog.action_space})
    agent.fit(data, 2, progress=False)  # warm up (and compile the brush where it is used)

    def update():
        agent.fit(data, 1, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(update, rounds=5, iterations=1, warmup_rounds=0)
    benchmark.extra_info["agent_steps_per_second"] = batch * prog.steps / benchmark.stats.stats.mean
