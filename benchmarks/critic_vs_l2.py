"""The critic against the l2 reward, side by side at equal compute (Ganin et al. 2018, Figure 8).

Each arm is a shipped configuration (``critic-vs-l2-<dataset>``: A2C from scratch, sized for one
CPU core a run) with a few settings changed; every arm of a dataset runs the same recipe for the
same minutes of training time, one torch thread per run, and logs the one-pass l2 on 64 held-out
targets every 100 updates with the run's training CPU seconds.

``python benchmarks/critic_vs_l2.py run OUT DATASET ARMS SEEDS [--minutes M] [--jobs J]``
    trains every (arm, seed) into ``OUT/DATASET/ARM-sSEED``, ``J`` runs at a time (resuming
    runs already there). ``ARMS`` and ``SEEDS`` are comma-separated (``critic,l2 0,1``).
``python benchmarks/critic_vs_l2.py report OUT``
    evaluates every run that kept its final weights once more, one greedy pass on the
    dataset's final targets (never the curves' 64), measures how often a critic ranks two of
    its agent's passes on a target as the l2 does (:func:`critic_agreement`), and writes per
    dataset ``OUT/DATASET.png`` (held-out l2 against updates and against CPU minutes, the mean
    over seeds bold) and ``OUT/results.md``.

Arms (:data:`ARMS`): ``critic`` and ``l2`` (the comparison), each also at Adam ``3e-4`` (the
learning rate chosen per reward on the curves' targets), ``blind`` (the critic's agent that
does not see its canvases, Figure 8a's dotted line) and one change each to the critic, to find
out what it owes its result to.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

DATASETS = ("mnist", "omniglot", "scenes")
#: arm -> settings changed from the dataset's configuration (``--set`` of ``spiral-ppl train``).
ARMS = {
    "critic": [],
    "l2": ["reward.kind=l2"],
    "critic-lr3e-4": ["a2c.lr=3e-4"],
    "l2-lr3e-4": ["reward.kind=l2", "a2c.lr=3e-4"],
    "blind": ["agent.blind=true"],
    "l2-unnormalised": ["reward.kind=l2", "reward.normalise=false"],
    "critic-unnormalised": ["reward.normalise=false"],
    "critic-terminal": ["reward.temporal=false"],
    "critic-spectral-norm": ["critic.spectral_norm=true"],
    "critic-no-replay": ["critic.replay_batches=1"],
    "critic-no-drift": ["critic.drift_penalty=0"],
    # The same changes to the critic that trains best here, 3 steps per policy update.
    "critic-3-steps-no-replay": ["critic.steps=3", "critic.replay_batches=1"],
    "critic-3-steps-no-drift": ["critic.steps=3", "critic.drift_penalty=0"],
    "critic-3-steps-complement": ["critic.steps=3", "critic.complement=true"],
    "critic-3-steps": ["critic.steps=3"],
    "critic-5-steps": ["critic.steps=5"],
    "critic-mismatched": ["critic.mismatched_pairs=0.5"],
}
#: What each arm is, for the table.
DESCRIPTIONS = {
    "critic": "WGAN-GP critic D(x, target)",
    "l2": "minus the l2 to the target",
    "critic-lr3e-4": "critic, Adam 3e-4",
    "l2-lr3e-4": "l2, Adam 3e-4",
    "blind": "critic, blind policy",
    "l2-unnormalised": "l2, rewards not normalised",
    "critic-unnormalised": "critic, rewards not normalised",
    "critic-terminal": "critic, terminal reward (no temporal credit)",
    "critic-spectral-norm": "critic, spectrally normalised",
    "critic-no-replay": "critic, replay of the last batch only",
    "critic-no-drift": "critic, no drift penalty",
    "critic-3-steps-no-replay": "critic, 3 steps, replay of the last batch only",
    "critic-3-steps-no-drift": "critic, 3 steps, no drift penalty",
    "critic-3-steps-complement": "critic, 3 steps, complement pairs (SPIRAL++)",
    "critic-3-steps": "critic, 3 critic steps per update",
    "critic-5-steps": "critic, 5 critic steps per update",
    "critic-mismatched": "critic, half its fakes mismatched real pairs",
}
#: Colour and line style of each arm's curves.
STYLES = {"critic": ("C3", "-"), "l2": ("C0", "-"), "critic-lr3e-4": ("C1", "-"), "l2-lr3e-4": ("C9", "-"),
          "blind": ("C3", ":"), "l2-unnormalised": ("C0", ":"), "critic-unnormalised": ("C3", "--"),
          "critic-terminal": ("C5", "-"), "critic-spectral-norm": ("C4", "-"), "critic-no-replay": ("C7", "-"),
          "critic-no-drift": ("C8", "-"), "critic-3-steps": ("C2", "-"), "critic-5-steps": ("C6", "-"),
          "critic-mismatched": ("C1", "--"), "critic-3-steps-no-replay": ("C7", "--"),
          "critic-3-steps-no-drift": ("C8", "--"), "critic-3-steps-complement": ("C9", "--")}
#: The arms of the figure's top row (the comparison); the others go to the bottom row with the
#: critic and the l2 reward as references.
COMPARISON = ("critic", "l2", "critic-lr3e-4", "l2-lr3e-4", "blind")


def final_targets(dataset: str, image_size: int) -> tuple[torch.Tensor, str]:
    """The held-out targets of the table, never the curves' (the first 64 of the test split)."""
    import spiral_ppl as sp
    from spiral_ppl import experiments

    config = experiments.load_config(f"critic-vs-l2-{dataset}")
    if dataset == "mnist":
        return experiments.target_images(sp.data.MNIST(split="test", image_size=image_size), 256, 5000), \
            "MNIST test digits 5,000..5,255"
    if dataset == "omniglot":
        evaluation = sp.data.Omniglot(split="evaluation", image_size=image_size)
        # Every alphabet; the curves' targets (every 205th drawing) left out.
        indices = [index for index in range(25, len(evaluation), 51) if index % 205][:256]
        return evaluation.images(indices), "256 Omniglot evaluation-set drawings, every 51st from the 26th"
    if dataset == "scenes":
        test = experiments.load_dataset(config, image_size, "test")
        return experiments.target_images(test, len(test) - 64, 64), f"scenes {64}..{len(test) - 1} of the test seed"
    raise ValueError(f"unknown dataset {dataset!r}; the datasets are mnist, omniglot and scenes")


def train_one(out: Path, dataset: str, arm: str, seed: int, minutes: float, device: str) -> int:
    folder = out / dataset / f"{arm}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "agent.pt").exists():
        return 0
    command = [sys.executable, "-m", "spiral_ppl.cli", "train", f"critic-vs-l2-{dataset}", "--out", str(folder),
               "--seed", str(seed), "--minutes", str(minutes), "--device", device]
    for setting in ARMS[arm]:
        command += ["--set", setting]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(folder / "train.log", "w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment).returncode


def run(options: argparse.Namespace) -> None:
    arms = options.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; the arms are {sorted(ARMS)}")
    seeds = [int(seed) for seed in options.seeds.split(",")]
    jobs = [(arm, seed) for seed in seeds for arm in arms]
    started = time.perf_counter()
    with ThreadPoolExecutor(options.jobs) as pool:
        codes = list(pool.map(lambda job: train_one(options.out, options.dataset, *job, options.minutes,
                                                    options.device), jobs))
    for (arm, seed), code in zip(jobs, codes):
        print(f"{options.dataset} {arm} seed {seed}: {'done' if code == 0 else f'failed ({code})'}")
    print(f"{len(jobs)} runs in {(time.perf_counter() - started) / 60:.1f} minutes")


@torch.no_grad()
def critic_agreement(agent, targets: torch.Tensor, passes: int = 4, seed: int = 0) -> float:
    """How often the critic orders two canvases for one target as the l2 does. Per target the
    canvases are ``passes`` sampled passes of the agent and as many programs drawn from the
    prior; over the pairs whose scores and l2 both differ, the share whose orders agree (1: the
    critic ranks as the l2 does; 0.5: no better than a coin)."""
    from spiral_ppl.inference.spiral.engine import decode
    from spiral_ppl.programs.base import mean_squared_error

    repeated = targets.repeat(passes, 1, 1, 1)
    own = decode(agent, agent.prog, repeated, greedy=False).final.float()
    drawn = agent.prog.sample_prior(len(repeated), generator=torch.Generator().manual_seed(seed))
    canvases = torch.cat([own, agent.prog.render(drawn)])
    paired = repeated.repeat(2, 1, 1, 1)
    scores = agent.critic(canvases, paired).view(2 * passes, -1)
    l2 = mean_squared_error(canvases, paired).view(2 * passes, -1)
    score_order = torch.sign(scores[:, None] - scores[None])  # (canvas, canvas, target)
    l2_order = torch.sign(l2[None] - l2[:, None])  # a higher score should mean a lower l2
    pairs = (score_order != 0) & (l2_order != 0)
    return float((score_order == l2_order)[pairs].float().mean()) if bool(pairs.any()) else float("nan")


def read_curve(folder: Path) -> dict[str, np.ndarray]:
    with open(folder / "eval.csv") as stream:
        rows = list(csv.DictReader(stream))
    return {key: np.array([float(row[key]) for row in rows]) for key in ("update", "cpu_seconds", "eval_l2",
                                                                          "blank_l2")}


def at(curve: dict[str, np.ndarray], axis: str, point: float) -> float:
    """The curve's l2 at ``point`` of ``axis``, interpolated linearly between evaluations."""
    return float(np.interp(point, curve[axis], curve["eval_l2"]))


def plot_curves(curves: dict, by_arm: dict, common_updates: float, common_cpu: float, path: Path,
                dataset: str) -> None:
    """Held-out l2 against updates (left) and CPU minutes (right); the comparison's arms on the
    top row, single changes to the critic below (thin lines: seeds; bold: their mean)."""
    from spiral_ppl.plots import plt

    rows = [[arm for arm in by_arm if arm in COMPARISON],
            [arm for arm in by_arm if arm not in COMPARISON or arm in ("critic", "l2")]]
    rows = [row for row in rows if row and (row is rows[0] or set(row) - {"critic", "l2"})]
    figure, axes = plt.subplots(len(rows), 2, figsize=(11, 4 * len(rows)), sharey=True, squeeze=False)
    blank = float(next(iter(curves.values()))["blank_l2"][0])
    for row, arms in zip(axes, rows):
        for arm in arms:
            colour, style = STYLES[arm]
            for name in by_arm[arm]:
                row[0].plot(curves[name]["update"], curves[name]["eval_l2"], style, color=colour, alpha=0.3,
                            linewidth=1)
                row[1].plot(curves[name]["cpu_seconds"] / 60, curves[name]["eval_l2"], style, color=colour,
                            alpha=0.3, linewidth=1)
            # The mean over seeds, from the first evaluation all of them made to the equal-compute point.
            for axis, key, end, scale in ((row[0], "update", common_updates, 1),
                                          (row[1], "cpu_seconds", common_cpu, 1 / 60)):
                grid = np.linspace(max(curves[name][key][0] for name in by_arm[arm]), end, 50)
                mean = np.mean([[at(curves[name], key, x) for x in grid] for name in by_arm[arm]], axis=0)
                axis.plot(grid * scale, mean, style, color=colour, linewidth=2.5,
                          label=f"{DESCRIPTIONS[arm]} ({len(by_arm[arm])})")
        for axis in row:
            axis.axhline(blank, color="grey", linestyle="--", linewidth=1, label="blank canvas")
            axis.grid(alpha=0.3)
        row[0].set_ylabel("one-pass l2, 64 held-out targets")
        row[0].legend(fontsize=8)
    axes[-1][0].set_xlabel("updates (32 episodes each)")
    axes[-1][1].set_xlabel("training CPU minutes (one core)")
    figure.suptitle(f"{dataset}: the critic against the l2 reward (thin: seeds; bold: their mean; (n): seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(options: argparse.Namespace) -> None:
    import spiral_ppl as sp
    from spiral_ppl.inference.spiral import Spiral
    from spiral_ppl.plots import plt
    from spiral_ppl.programs.base import mean_squared_error

    torch.set_num_threads(2)
    lines = ["# The critic against the l2 reward", ""]
    for dataset_folder in sorted(path for path in options.out.iterdir() if path.name in DATASETS and path.is_dir()):
        dataset = dataset_folder.name
        runs = sorted(folder for folder in dataset_folder.iterdir() if (folder / "eval.csv").exists())
        if not runs:
            continue
        curves = {folder.name: read_curve(folder) for folder in runs}
        # Runs whose final weights were kept get the final evaluation too.
        agents = {folder.name: Spiral.load(folder / "agent.pt", device="cpu") for folder in runs
                  if (folder / "agent.pt").exists()}
        final, agreement, described, blank = {}, {}, "none (no run kept its final weights)", float("nan")
        if agents:
            prog = next(iter(agents.values())).prog
            targets, described = final_targets(dataset, prog.image_size)
            blank = float(mean_squared_error(prog.blank_canvas(len(targets)), targets).mean())
            final = {name: float(mean_squared_error(agent.one_pass(targets), targets).mean())
                     for name, agent in agents.items()}
            agreement = {name: critic_agreement(agent, targets) for name, agent in agents.items()
                         if agent.critic is not None}
        arms = sorted({name.rsplit("-s", 1)[0] for name in curves}, key=lambda arm: list(ARMS).index(arm))
        by_arm = {arm: [name for name in curves if name.rsplit("-s", 1)[0] == arm] for arm in arms}
        # Equal compute: the fewest updates, and the least CPU time, that every run of the dataset reached.
        common_updates = min(curve["update"][-1] for curve in curves.values())
        common_cpu = min(curve["cpu_seconds"][-1] for curve in curves.values())

        plot_curves(curves, by_arm, common_updates, common_cpu, options.out / f"{dataset}.png", dataset)

        if not agents:
            blank = float(next(iter(curves.values()))["blank_l2"][0])  # on the curves' 64 targets
        lines += [f"## {dataset}", "", f"Final targets: {described}; blank canvas {blank:.4f}. Curves: "
                  f"[{dataset}.png]({dataset}.png). Equal compute: {common_updates:.0f} updates, "
                  f"{common_cpu / 60:.1f} CPU minutes.", "",
                  "| arm | runs | updates | CPU minutes | l2 at equal updates | l2 at equal CPU time | "
                  "final one pass | / blank | critic agrees with l2 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for arm in arms:
            names = by_arm[arm]
            values = {
                "updates": np.mean([curves[name]["update"][-1] for name in names]),
                "cpu": np.mean([curves[name]["cpu_seconds"][-1] for name in names]) / 60,
                "at_updates": np.mean([at(curves[name], "update", common_updates) for name in names]),
                "at_cpu": np.mean([at(curves[name], "cpu_seconds", common_cpu) for name in names]),
                "final": [final[name] for name in names if name in final],
            }
            if len(values["final"]) == len(names):
                spread = "" if len(names) == 1 else f" ({min(values['final']):.4f}..{max(values['final']):.4f})"
                ending = f"{np.mean(values['final']):.4f}{spread} | {np.mean(values['final']) / blank:.2f} |"
            else:
                ending = "- | - |"
            agreements = [agreement[name] for name in names if name in agreement]
            ending += f" {np.mean(agreements):.2f} |" if len(agreements) == len(names) else " - |"
            lines.append(f"| {DESCRIPTIONS[arm]} | {len(names)} | {values['updates']:.0f} | {values['cpu']:.1f} | "
                         f"{values['at_updates']:.4f} | {values['at_cpu']:.4f} | {ending}")
        lines.append("")
        with open(options.out / f"{dataset}.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["run", "updates", "cpu_seconds", "final_l2", "blank_l2"])
            for name in curves:
                writer.writerow([name, int(curves[name]["update"][-1]), f"{curves[name]['cpu_seconds'][-1]:.1f}",
                                 f"{final.get(name, float('nan')):.5f}", f"{blank:.5f}"])
        if agents:
            grid_targets = targets[:8]
            pictures = {name: agent.one_pass(grid_targets) for name, agent in agents.items()}
            plt.close(sp.plots.reconstruction_grid(grid_targets, pictures, options.out / f"{dataset}_samples.png"))
    (options.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("run", help="train the arms")
    train.add_argument("out", type=Path)
    train.add_argument("dataset", choices=DATASETS)
    train.add_argument("arms", help=f"comma-separated, of {', '.join(ARMS)}")
    train.add_argument("seeds", help="comma-separated seeds, e.g. 0,1")
    train.add_argument("--minutes", type=float, default=8.0, help="training time of each run")
    train.add_argument("--jobs", type=int, default=2, help="runs at a time (one core each)")
    train.add_argument("--device", default="cpu")
    train.set_defaults(run=run)
    summary = commands.add_parser("report", help="evaluate the runs, plot and tabulate")
    summary.add_argument("out", type=Path)
    summary.set_defaults(run=report)
    options = parser.parse_args()
    options.run(options)


if __name__ == "__main__":
    main()
