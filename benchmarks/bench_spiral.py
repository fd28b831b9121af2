"""SPIRAL throughput: agent steps per second of training updates, CPU (and CUDA if present).

An agent step is one action of one episode: an update of ``batch_size`` episodes of
``steps`` actions makes ``batch_size * steps`` agent steps (rollout, rewards, A2C step and,
with the critic reward, one WGAN-GP step). Setting: conditional MNIST-like reconstruction,
64x64 Brush (grid 16), 6 steps, on random digit-sized targets, with the network of the
shipped ``mnist-recon-cpu`` agent (16 channels, 2 ResBlocks, LSTM 128, spatial location
decoder).

Run: ``.venv/bin/python -m pytest benchmarks/bench_spiral.py --benchmark-enable``
Agent steps per second is ``batch * steps / mean time`` (also stored as ``extra_info``).
"""

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral.episodes import LocalEpisodes
from spiral_ppl.inference.spiral.imitation import imitation_update
from spiral_ppl.inference.spiral.sources import ImageSource

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
    config = sp.inference.SpiralConfig(a2c={"batch_size": batch},
                                       policy={"channels": 16, "res_blocks": 2, "lstm_size": 128,
                                               "location_channels": 16, "location_decoder": "spatial"},
                                       reward={"kind": reward, "temporal": True})
    agent = sp.inference.Spiral(prog, config=config, device=device)
    data = prog.render({c.name: torch.randint(0, c.size, (256, 6)) for c in prog.action_space})
    agent.fit(data, 2, progress=False)  # warm up (and compile the brush where it is used)

    def update():
        agent.fit(data, 1, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(update, rounds=5, iterations=1, warmup_rounds=0)
    benchmark.extra_info["agent_steps_per_second"] = batch * prog.steps / benchmark.stats.stats.mean


@pytest.mark.parametrize("flush_denormal", [False, True], ids=["denormals-kept", "denormals-flushed"])
@pytest.mark.parametrize("kind", ["imitation", "a2c"])
def test_learner_update_of_the_mnist_policy(benchmark, kind, flush_denormal):
    """One update (batch 32) of the shipped MNIST policy, computing with denormal floats and
    with them flushed to zero: a behaviour-cloning update, or an A2C update with the l2 reward
    (its rollout included).

    Gradients through weights near zero are tiny, and the CPU's denormal arithmetic is slow.
    The cases side by side are why ``Spiral.fit`` and ``Spiral.imitate`` flush denormals
    (``training.denormals_flushed``); the updates timed here leave the setting to their caller.
    """
    torch.manual_seed(0)
    torch.set_flush_denormal(flush_denormal)
    try:
        agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
        prog = agent.prog
        programs = {c.name: torch.randint(0, c.size, (32, prog.steps)) for c in prog.action_space}
        images = prog.render(programs)
        if kind == "imitation":
            def update():
                imitation_update(agent, images, programs)
        else:
            def update():
                episodes = LocalEpisodes()
                episodes.start(agent, ImageSource(images, 1, prog.image_size))
                batch = episodes.next_batch()
                agent.learner.learn(batch.episode, batch.targets, lambda count: images[:count])
        for _ in range(2):  # the first steps move the zero weights off zero
            update()
        benchmark.pedantic(update, rounds=5, iterations=1, warmup_rounds=0)
    finally:
        torch.set_flush_denormal(False)  # the process default
