"""Rollout throughput of Ray workers against their number, for MuJoCo scenes and MyPaint strokes.

For each renderer, episodes of a SPIRAL policy (the policy only: no learning) are rolled
out in this process (``workers = 0``, the local backend's rollouts) and then by 1, 2, ...
Ray rollout workers, each keeping one task of ``EPISODES`` episodes in flight, as
``Spiral.fit(backend=RayEpisodes(...))`` does. Prints a table of episodes and renders per
second, with the speed-up over one worker, and draws the scaling curve.

Settings: MuJoCo ``SceneProgram`` 64x64 (grid 16), 10 steps; MyPaint ``PaintProgram``
64x64 (grid 32, classic/dry_brush), 10 steps; ``SpiralConfig.small()`` policies on the CPU.

Run: ``.venv/bin/python benchmarks/ray_rollout_scaling.py OUT [max_workers] [tasks_per_worker]``
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import ray
import torch

import spiral_ppl as sp
from spiral_ppl.inference.spiral import SpiralConfig
from spiral_ppl.inference.spiral.distributed import (
    RolloutTask,
    RolloutWorker,
    cpu_weights,
    import_ray,
    policy_arguments,
    spawn_workers,
)
from spiral_ppl.plots import plt


def rollout_throughput(agent: sp.inference.Spiral, *, workers: int, episodes_per_task: int, tasks: int,
                       targets: Callable[[int], torch.Tensor] | None = None) -> dict[str, float]:
    """Episodes and renders per second of ``workers`` Ray rollout workers for ``agent`` (no learning).

    Every worker keeps one task in flight, as during training, until ``tasks`` have come
    back. The first task of each worker (which loads the weights and warms the renderer)
    is not timed.

    :param targets: ``count -> (count, C, H, W)`` targets of a conditional agent.
    """
    ray = import_ray()
    if agent.conditional and targets is None:
        raise ValueError("a conditional agent's rollouts need targets=: count -> (count, C, H, W) images")
    actors = spawn_workers(agent, workers, cpus=1, max_restarts=0, observe_all=False)
    weights = [ray.put(cpu_weights(agent.policy))]

    def task(task_id: int) -> RolloutTask:
        images = targets(episodes_per_task) if agent.conditional else None
        return RolloutTask(task_id, task_id, episodes_per_task, images, 0)

    try:
        ray.get([actor.rollout.remote(task(-1 - index), weights) for index, actor in enumerate(actors)])
        started = time.perf_counter()
        pending = {actor.rollout.remote(task(index), weights): actor for index, actor in enumerate(actors)}
        sent, done, renders = len(actors), 0, 0
        while pending:
            [reference], _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(reference)
            renders += ray.get(reference).renders
            done += 1
            if sent < tasks:
                pending[actor.rollout.remote(task(sent), weights)] = actor
                sent += 1
        seconds = time.perf_counter() - started
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    episodes = done * episodes_per_task
    return {"workers": workers, "episodes_per_second": episodes / seconds, "renders_per_second": renders / seconds,
            "seconds": seconds, "episodes": episodes}


out = Path(sys.argv[1])
max_workers = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
tasks_per_worker = int(sys.argv[3]) if len(sys.argv) > 3 else 6
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)
EPISODES, STEPS = 8, 10

programs = {
    "MuJoCo scenes": sp.programs.SceneProgram(sp.renderers.MujocoScene(image_size=64, grid_size=16), steps=STEPS),
    "MyPaint strokes": sp.programs.PaintProgram(sp.renderers.MyPaint(canvas_size=64, grid_size=32), steps=STEPS),
}
ray.init(num_cpus=max_workers, include_dashboard=False, log_to_driver=False)
rows = []
for name, prog in programs.items():
    agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}), device="cpu")
    targets = torch.rand(EPISODES, prog.channels, prog.image_size, prog.image_size)

    def target_images(count: int) -> torch.Tensor:
        return targets[:count]

    # In this process, through the same worker code, as the local backend would roll out.
    local = RolloutWorker(prog, policy_arguments(agent), blind=False, observe_all=False)
    weights = [ray.put(agent.policy.state_dict())]
    local.rollout(RolloutTask(-1, 0, EPISODES, targets, 0), weights)  # loads the weights, warms the renderer
    started, renders = time.perf_counter(), prog.renders
    for index in range(tasks_per_worker):
        local.rollout(RolloutTask(index, index, EPISODES, targets, 0), weights)
    seconds = time.perf_counter() - started
    rows.append({"renderer": name, "workers": 0, "episodes_per_second": EPISODES * tasks_per_worker / seconds,
                 "renders_per_second": (prog.renders - renders) / seconds})
    print(rows[-1], flush=True)
    for workers in range(1, max_workers + 1):
        measured = rollout_throughput(agent, workers=workers, episodes_per_task=EPISODES,
                                      tasks=tasks_per_worker * workers, targets=target_images)
        rows.append({"renderer": name, **measured})
        print(rows[-1], flush=True)
ray.shutdown()

(out / "scaling.json").write_text(json.dumps(rows, indent=1) + "\n")
figure, axes = plt.subplots(figsize=(6, 4))
print("\n| renderer | workers | episodes/s | renders/s | speed-up over 1 worker |\n|---|---|---|---|---|")
for index, name in enumerate(programs):
    mine = [row for row in rows if row["renderer"] == name]
    one = next(row for row in mine if row["workers"] == 1)["episodes_per_second"]
    for row in mine:
        label = "in-process" if row["workers"] == 0 else row["workers"]
        print(f"| {name} | {label} | {row['episodes_per_second']:.1f} | {row['renders_per_second']:.0f} | "
              f"{row['episodes_per_second'] / one:.2f}x |")
    ray_rows = [row for row in mine if row["workers"] > 0]
    axes.plot([row["workers"] for row in ray_rows], [row["episodes_per_second"] / one for row in ray_rows],
              marker="o", color=f"C{index}", label=name)
axes.plot([1, max_workers], [1, max_workers], color="grey", linestyle="--", linewidth=1, label="linear")
axes.axvline(os.cpu_count(), color="grey", linestyle=":", linewidth=1, label=f"{os.cpu_count()} CPU cores")
axes.set_xlabel("Ray rollout workers")
axes.set_ylabel("episodes per second / one worker's")
axes.set_title(f"Rollout scaling on Ray ({os.cpu_count()} cores, {EPISODES} episodes of {STEPS} steps per task)",
               fontsize=9)
axes.grid(True, alpha=0.3)
axes.legend(fontsize=8)
figure.tight_layout()
figure.savefig(out / "scaling.png", dpi=120)
print(f"wrote {out / 'scaling.png'}")
