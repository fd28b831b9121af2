"""Train a conditional SPIRAL agent for MUJOCO SCENES on the CPU, and record the run.

A CPU-sized version of the paper's scenes experiment: 64x64 MuJoCo scenes of 1 to 5
objects, a 10-step SceneProgram (the paper: 20), a narrow network. Reinforcement learning
alone barely leaves the empty-scene baseline in CPU minutes, so the policy is first
warm-started by imitating the dataset's ground-truth programs (behaviour cloning,
``Spiral.imitate``, with the adds in raster order: see ``MujocoScenes(order=)``), then
refined by A2C with the l2 reward (``Spiral.fit``).

Every ``EVAL_MINUTES`` the agent is evaluated in one pass on 64 held-out scenes (seed 1;
the head-to-head uses seed 12345) and written to ``OUT/last.pt``; the best so far is kept
in ``OUT/scenes-recon-cpu.pt``, and ``OUT/points.json`` holds the curve. Interrupting the
run loses nothing but the minutes since the last evaluation.

Run: ``[INPUT_CONTRAST=4] .venv/bin/python benchmarks/spiral_scenes_cpu.py OUT [imitation_minutes] [rl_minutes] [order]``
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

import spiral_ppl as sp
from spiral_ppl.plots import plt, reconstruction_grid

out = Path(sys.argv[1])
imitation_minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
rl_minutes = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
order = sys.argv[4] if len(sys.argv) > 4 else "raster"
eval_minutes = float(os.environ.get("EVAL_MINUTES", "3"))
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # a shared 2-core machine

steps = 10
prog = sp.programs.SceneProgram(sp.renderers.MujocoScene(image_size=64, grid_size=16), steps=steps)
train = sp.data.MujocoScenes(size=50_000, seed=0, steps=steps, order=order)
held_out = sp.data.MujocoScenes(size=256, seed=1, steps=steps)
test = torch.stack([held_out[i][0] for i in range(len(held_out))])
config = sp.inference.SpiralConfig(
    batch_size=32, policy_channels=16, res_blocks=2, lstm_size=128, location_channels=16,
    policy_lr=1e-3, entropy_cost=0.003, reward_scale=100.0,
    input_contrast=float(os.environ.get("INPUT_CONTRAST", "1")),
)
agent = sp.inference.Spiral(prog, reward="l2", config=config, device="cpu")
points, best = [], float("inf")


def evaluate(phase):
    global best
    result = agent.infer(prog, test[:64], sp.Budget(renders=steps), seed=0)
    point = (agent.train_seconds, agent.learner.updates, float(result.l2.mean()), phase)
    points.append(point)
    print(f"{point[0]:7.1f}s  update {point[1]:5d}  held-out l2 {point[2]:.5f}  ({phase})", flush=True)
    agent.save(out / "last.pt")
    if point[2] < best:
        best = point[2]
        agent.save(out / "scenes-recon-cpu.pt", training_state=False)
    (out / "points.json").write_text(json.dumps(points))


evaluate("untrained")
for phase, minutes in (("imitation", imitation_minutes), ("A2C", rl_minutes)):
    started = time.perf_counter()
    while time.perf_counter() - started < 60 * minutes:
        chunk_started = time.perf_counter()
        while time.perf_counter() - chunk_started < 60 * eval_minutes:
            if phase == "imitation":
                agent.imitate(train, 25, progress=False)
            else:
                agent.fit(train, 10, progress=False)
        evaluate(phase)

agent = sp.inference.Spiral.load(out / "scenes-recon-cpu.pt", device="cpu")
one_pass = agent.infer(prog, test, sp.Budget(renders=steps), seed=0)
best_of_10 = agent.infer(prog, test, sp.Budget(renders=10 * steps), seed=0)
blank = float(sp.programs.mean_squared_error(prog.blank_canvas(1), test).mean())
best_point = min(points, key=lambda point: point[2])
summary = {
    "order": order,
    "updates_of_best": best_point[1],
    "train_seconds_of_best": best_point[0],
    "test_l2_one_pass": float(one_pass.l2.mean()),
    "test_l2_best_of_10": float(best_of_10.l2.mean()),
    "blank_l2": blank,
    "points": points,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))

figure, axes = plt.subplots(figsize=(6, 4))
for phase in ("imitation", "A2C"):
    chosen = [p for p in points if p[3] in (phase, "untrained")] if phase == "imitation" else \
        [p for p in points if p[3] == phase]
    axes.plot([p[0] / 60 for p in chosen], [p[2] for p in chosen], marker="o", linewidth=2, label=phase)
axes.axhline(blank, color="grey", linestyle="--", label="empty scene")
axes.set_xlabel("training time (minutes, 1 CPU thread)")
axes.set_ylabel("held-out l2, one pass (64 scenes)")
axes.set_yscale("log")
axes.set_title("SPIRAL on MUJOCO SCENES, 10 steps, CPU")
axes.grid(alpha=0.3)
axes.legend()
figure.savefig(out / "spiral_scenes_cpu_curve.png", dpi=120, bbox_inches="tight")
reconstruction_grid(test[:8], {"one pass": one_pass.images[:8], "best of 10": best_of_10.images[:8]},
                    out / "spiral_scenes_cpu_samples.png")
print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=1))
