"""Train a conditional SPIRAL agent for MUJOCO SCENES on the CPU, and record the run.

A CPU-sized version of the paper's scenes experiment: 64x64 MuJoCo scenes of 1 to 5
objects, a 10-step SceneProgram (the paper: 20), a narrow network. Reinforcement learning
alone barely leaves the empty-scene baseline in CPU minutes, so the policy is trained in up
to three phases:

1. behaviour cloning of the dataset's ground-truth programs (``Spiral.imitate``, adds in
   raster order: see ``MujocoScenes(order=)``);
2. DAgger: the policy's own episodes, labelled by the scenes' expert
   (``Spiral.imitate(expert=MujocoScenes.expert)``), so that it learns to recover from its
   own mistakes and to stop when the scene is done;
3. A2C with the l2 reward (``Spiral.fit``).

Every ``EVAL_MINUTES`` the agent is evaluated in one pass on 64 held-out scenes (seed 1;
the head-to-head uses seed 12345) and written to ``OUT/last.pt``; the best so far is kept
in ``OUT/scenes-recon-cpu.pt``, and ``OUT/points.json`` holds the curve. Interrupting the
run loses nothing but the minutes since the last evaluation. ``START=agent.pt`` continues
a saved agent instead of a new one (its phases add to the curve); ``LR`` sets Adam's
learning rate (1e-3); ``DAGGER_MIX=1`` alternates DAgger with behaviour cloning;
``DAGGER_MODIFY=0`` keeps the expert from moving misplaced objects;
``TEMPORAL_REWARDS=1`` rewards every step's l2 change
(SPIRAL++); ``LOCATION_READOUT=1`` gives a new agent ``SpiralConfig(location_readout=True)``.

Run: ``[INPUT_CONTRAST=4] [START=agent.pt] .venv/bin/python benchmarks/spiral_scenes_cpu.py OUT
[imitation_minutes] [dagger_minutes] [rl_minutes] [order]``
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

import spiral_ppl as sp
from spiral_ppl.plots import reconstruction_grid, training_curve

out = Path(sys.argv[1])
imitation_minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
dagger_minutes = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
rl_minutes = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
order = sys.argv[5] if len(sys.argv) > 5 else "raster"
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
    policy_lr=float(os.environ.get("LR", "1e-3")), entropy_cost=0.003, reward_scale=100.0,
    input_contrast=float(os.environ.get("INPUT_CONTRAST", "1")),
    temporal_rewards=os.environ.get("TEMPORAL_REWARDS", "0") == "1",
    location_readout=os.environ.get("LOCATION_READOUT", "0") == "1",
)
if os.environ.get("START"):
    agent = sp.inference.Spiral.load(os.environ["START"], device="cpu")
    agent.set_hyperparameters(policy_lr=config.policy_lr, temporal_rewards=config.temporal_rewards)
else:
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


evaluate("start" if os.environ.get("START") else "untrained")


def expert(state, programs):
    return train.expert(state, programs, modify=os.environ.get("DAGGER_MODIFY", "1") == "1")


def dagger_updates():
    agent.imitate(train, 25, expert=expert, progress=False)
    if os.environ.get("DAGGER_MIX") == "1":  # behaviour cloning keeps showing the policy clean canvases
        agent.imitate(train, 25, progress=False)


phases = {
    "imitation": lambda: agent.imitate(train, 25, progress=False),
    "DAgger": dagger_updates,
    "A2C": lambda: agent.fit(train, 10, progress=False),
}
for phase, minutes in zip(phases, (imitation_minutes, dagger_minutes, rl_minutes)):
    started = time.perf_counter()
    while time.perf_counter() - started < 60 * minutes:
        chunk_started = time.perf_counter()
        while time.perf_counter() - chunk_started < 60 * eval_minutes:
            phases[phase]()
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

training_curve(points, out / "spiral_scenes_cpu_curve.png", baselines={"empty scene": blank}, log_scale=True,
               title="SPIRAL on MUJOCO SCENES, 10 steps, CPU", xlabel="training time (minutes, 1 CPU thread)",
               ylabel="held-out l2, one pass (64 scenes)")
reconstruction_grid(test[:8], {"one pass": one_pass.images[:8], "best of 10": best_of_10.images[:8]},
                    out / "spiral_scenes_cpu_samples.png")
print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=1))
