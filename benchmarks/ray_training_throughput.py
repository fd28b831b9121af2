"""End-to-end SPIRAL training speed: the local backend against Ray rollout workers.

Trains the same conditional MuJoCo-scenes agent (l2 reward, ``SpiralConfig.small``, batch
16, 10-step ``SceneProgram`` 64x64) for ``UPDATES`` updates with ``backend="local"`` and with
``RayEpisodes(workers=n)``, and prints the median agent steps per second of each (the first
updates, which start the workers, are left out of the median), with how many updates behind
the learner the workers' episodes were.

Run: ``.venv/bin/python benchmarks/ray_training_throughput.py [updates] [max_workers]``
"""

import statistics
import sys

import ray
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import RayEpisodes, SpiralConfig

updates = int(sys.argv[1]) if len(sys.argv) > 1 else 30
max_workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(1)
ray.init(num_cpus=max_workers, include_dashboard=False, log_to_driver=False)

prog = sp.programs.SceneProgram(sp.renderers.MujocoScene(image_size=64, grid_size=16), steps=10)
scenes = sp.data.MujocoScenes(size=256, seed=0, steps=10)
data = torch.stack([scenes[index][0] for index in range(len(scenes))])
print("| backend | agent steps/s (median) | mean policy lag (updates) |\n|---|---|---|")
for backend in ["local"] + [RayEpisodes(workers=count) for count in range(1, max_workers + 1)]:
    torch.manual_seed(0)
    agent = sp.inference.Spiral(prog, config=SpiralConfig.small(a2c={"batch_size": 16}, reward={"kind": "l2"}),
                                device="cpu")
    history = agent.fit(data, updates, backend=backend, progress=False)
    speed = statistics.median(row["agent_steps_per_second"] for row in history[3:])
    label = backend if isinstance(backend, str) else f"ray, {backend.workers} worker(s)"
    lag = statistics.mean(row.get("policy_lag", 0.0) for row in history)
    print(f"| {label} | {speed:.0f} | {lag:.2f} |", flush=True)
ray.shutdown()
