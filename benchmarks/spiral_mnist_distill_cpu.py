"""Distil blocked Metropolis-Hastings into the MNIST SPIRAL agent on the CPU, and record the run.

Reinforcement learning with the l2 reward stalls within minutes on a CPU (the shipped
agent's curve is flat from its 5th to its 10th minute: it covers a digit's mass with thick
translucent ink). Search does better per target but pays for it in renders, every time.
This script amortises the search, in the spirit of expert iteration (Anthony et al. 2017)
and of training inference networks on posterior samples (Paige and Wood 2016):

1. *label*: blocked MH (``LABEL_RENDERS`` renders per digit) reconstructs ``LABELS``
   training digits; the programs it finds are saved as they come (``OUT/labels.pt``, so an
   interrupted run resumes);
2. *imitate*: starting from the shipped ``mnist-recon-cpu`` agent, the policy learns to
   write those programs by behaviour cloning (``Spiral.imitate``);
3. *refine*: A2C with the l2 reward (``Spiral.fit``), as the shipped agent was trained.

Every ``EVAL_MINUTES`` the agent is evaluated in one pass on 256 test digits (10,000 test
digits from index 5,000: never the head-to-head's first 100) and written to ``OUT``; the
best is kept as ``OUT/mnist-recon-cpu.pt`` and the curve in ``OUT/points.json``.

``LABELS=0`` skips steps 1 and 2: A2C alone continues the shipped agent's training (with
the policy learning rate ``RL_POLICY_LR`` when given), the control run for the distillation.

Run: ``SPIRAL_PPL_DATA=../shared/data .venv/bin/python benchmarks/spiral_mnist_distill_cpu.py OUT
[LABELS] [LABEL_RENDERS] [imitation_minutes] [rl_minutes] [RL_POLICY_LR]``
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import spiral_ppl as sp
from spiral_ppl.io import atomic_path
from spiral_ppl.plots import reconstruction_grid, training_curve

out = Path(sys.argv[1])
labels = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
label_renders = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
imitation_minutes = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
rl_minutes = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
rl_policy_lr = float(sys.argv[6]) if len(sys.argv) > 6 else None  # None: the shipped agent's
eval_minutes = float(os.environ.get("EVAL_MINUTES", "3"))
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(int(os.environ.get("THREADS", "1")))  # a shared 2-core machine

root = Path(os.environ.get("SPIRAL_PPL_DATA", "../shared/data")) / "mnist"
train = sp.data.MNIST(root, split="train")
held_out = sp.data.MNIST(root, split="test").images(range(5000, 5256))
agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
prog = agent.prog

# 1. Label training digits with blocked MH, in chunks saved as they finish.
label_file, chunk = out / "labels.pt", 256
done = torch.load(label_file, weights_only=True) if label_file.exists() else {"images": [], "actions": [], "l2": []}
if labels:
    with tqdm(total=labels, initial=chunk * len(done["images"]), desc="MH labels", unit="digit") as bar:
        for start in range(chunk * len(done["images"]), labels, chunk):
            digits = train.images(range(start, min(start + chunk, labels)))
            result = sp.inference.MCMC(chains=4).infer(prog, digits, sp.Budget(renders=label_renders), seed=start)
            done["images"].append(digits)
            done["actions"].append(result.actions)
            done["l2"].append(result.l2)
            with atomic_path(label_file) as temporary:
                torch.save(done, temporary)
            bar.update(digits.shape[0])
    images = torch.cat(done["images"])[:labels]
    programs = {name: torch.cat([a[name] for a in done["actions"]])[:labels] for name in done["actions"][0]}
    label_l2 = float(torch.cat(done["l2"])[:labels].mean())
    print(f"{images.shape[0]} MH labels at {label_renders} renders: mean l2 {label_l2:.4f}", flush=True)
else:
    imitation_minutes, label_l2 = 0.0, float("nan")

# 2-3. Imitate, then refine, evaluating and keeping the best one-pass agent.
points, best = [], float("inf")


def evaluate(phase):
    global best
    result = agent.infer(prog, held_out, sp.Budget(renders=prog.steps), seed=0)
    point = (agent.train_seconds, agent.learner.updates, float(result.l2.mean()), phase)
    points.append(point)
    print(f"{point[0]:7.1f}s  update {point[1]:5d}  held-out l2 {point[2]:.4f}  ({phase})", flush=True)
    if point[2] < best:
        best = point[2]
        agent.save(out / "mnist-recon-cpu.pt", training_state=False)
    (out / "points.json").write_text(json.dumps(points))


evaluate("shipped agent")
for phase, minutes in (("imitation", imitation_minutes), ("A2C", rl_minutes)):
    if phase == "A2C" and rl_policy_lr is not None:
        agent.set_hyperparameters(policy_lr=rl_policy_lr)
    started = time.perf_counter()
    while time.perf_counter() - started < 60 * minutes:
        chunk_started = time.perf_counter()
        while time.perf_counter() - chunk_started < 60 * eval_minutes:
            if phase == "imitation":
                agent.imitate((images, programs), 25, progress=False)
            else:
                agent.fit(train, 10, progress=False)
        evaluate(phase)

agent = sp.inference.Spiral.load(out / "mnist-recon-cpu.pt", device="cpu")
test = sp.data.MNIST(root, split="test").images(range(1000))
one_pass = agent.evaluate(test)
best_of_10 = agent.infer(prog, test[:256], sp.Budget(renders=10 * prog.steps), seed=0)
best_point = min(points, key=lambda point: point[2])
summary = {
    "labels": labels,
    "label_renders": label_renders,
    "label_l2": label_l2,
    "updates_of_best": best_point[1],
    "train_seconds_of_best": best_point[0],
    "test_l2_one_pass_first_1000": one_pass["eval_l2"],
    "blank_l2": one_pass["blank_l2"],
    "test_l2_best_of_10_first_256": float(best_of_10.l2.mean()),
    "points": points,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))

baselines = {"blank canvas": one_pass["blank_l2"]}
if labels:
    baselines[f"MH labels ({label_renders} renders)"] = label_l2
training_curve(points, out / "spiral_mnist_distill_curve.png", baselines=baselines,
               title="Distilling blocked MH into SPIRAL on MNIST, 6 strokes, CPU",
               xlabel="training time (minutes, 1 CPU thread, from the shipped agent's)",
               ylabel="held-out l2, one pass (256 test digits)")
reconstruction_grid(test[:10], {"best of 10": best_of_10.images[:10]}, out / "spiral_mnist_distill_samples.png")
print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=1))
