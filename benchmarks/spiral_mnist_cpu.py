"""Train a conditional SPIRAL agent to reconstruct MNIST on the CPU, and record the run.

A CPU-sized version of the paper's MNIST reconstruction (issue 6, item 5 is the GPU run):
64x64 Brush with a 16x16 grid, 6 strokes, the l2 reward with temporal credit assignment,
a narrow network. Writes the l2-against-wall-clock curve, the final figures (JSON) and the
checkpoint into ``OUT``.

Run: ``SPIRAL_PPL_DATA=../shared/data .venv/bin/python benchmarks/spiral_mnist_cpu.py OUT [minutes]``
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
minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # a shared 2-core machine

root = Path(os.environ.get("SPIRAL_PPL_DATA", "../shared/data")) / "mnist"
train = sp.data.MNIST(root, split="train")
test = sp.data.MNIST(root, split="test").images(range(1000))
prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=64, grid_size=16), steps=6)
config = sp.inference.SpiralConfig(
    batch_size=32, policy_channels=16, res_blocks=2, lstm_size=128, location_channels=16,
    policy_lr=1e-3, entropy_cost=0.01, reward_scale=10.0, temporal_rewards=True,
)
agent = sp.inference.Spiral(prog, reward="l2", config=config, device="cpu")

points = [(0.0, 0, agent.evaluate(test[:256])["eval_l2"])]
started, chunk = time.perf_counter(), 50
rates = []
while time.perf_counter() - started < minutes * 60:
    history = agent.fit(train, chunk, progress=False, log_dir=out / "logs", log_every=10)
    rates += [h["agent_steps_per_second"] for h in history]
    points.append((agent.train_seconds, agent.learner.updates, agent.evaluate(test[:256])["eval_l2"]))
    print(f"{points[-1][0]:7.1f}s  update {points[-1][1]:5d}  held-out l2 {points[-1][2]:.4f}", flush=True)
wall = time.perf_counter() - started

final = agent.evaluate(test, log_dir=out, update=agent.learner.updates)
best_of_10 = agent.infer(prog, test[:256], sp.Budget(renders=10 * prog.steps), seed=0)
summary = {
    "updates": agent.learner.updates,
    "train_seconds": agent.train_seconds,
    "wall_seconds": wall,
    "agent_steps_per_second_median": sorted(rates)[len(rates) // 2],
    "test_l2_one_pass": final["eval_l2"],
    "blank_l2": final["blank_l2"],
    "ratio_to_blank": final["eval_l2"] / final["blank_l2"],
    "test_l2_best_of_10_first_256": float(best_of_10.l2.mean()),
    "untrained_l2_first_256": points[0][2],
    "points": points,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
agent.save(out / "mnist-recon-cpu.pt", training_state=False)

training_curve(points, out / "spiral_mnist_cpu_curve.png", baselines={"blank canvas": final["blank_l2"]},
               title="Conditional SPIRAL on MNIST, 64x64, 6 strokes, CPU",
               xlabel="training wall-clock (minutes, 2-core CPU, shared)", ylabel="held-out l2, one pass (256 test digits)")
reconstruction_grid(test[:10], {"SPIRAL": best_of_10.images[:10]}, out / "spiral_mnist_cpu_samples.png")
print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=1))
