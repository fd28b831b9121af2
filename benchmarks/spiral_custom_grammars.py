"""SPIRAL on grammars a user writes: ``Spiral(prog).fit(images, minutes=M)``, defaults only.

``python benchmarks/spiral_custom_grammars.py OUT [MINUTES] [SEEDS]`` trains a fresh agent
with the default configuration and the default label-free recipe
(:func:`spiral_ppl.inference.spiral.recipe.default_phases`: sleep on the program's prior
samples, then self-imitation on the training images) for ``MINUTES`` (default 5) of
training time on each grammar, and scores it on 64 held-out targets against a blank canvas
and against SMC with the prior as its proposal at 100 renders:

- one pass (greedy), whose target is at most 0.5x the blank canvas's l2;
- the guided SMC (``agent.smc()``) at 100 renders, whose target is at most 0.3x the prior
  SMC's l2 at 100 renders.

Grammars (``tests/grammars.py``): the custom-grammar notebook's ``Blocks`` (3 steps,
``present`` prior 0.3/0.7, as the notebook builds it) and ``Discs`` (4 steps, uniform priors).
Targets are rendered programs drawn from the grammar's prior: 2,000 to train on, 64 held
out (other seeds). Nothing here is tuned per grammar. Writes ``OUT/results.md``,
``OUT/results.csv``, and per grammar and seed a training curve and a reconstruction grid.
"""

import csv
import sys
from pathlib import Path

import torch

import spiral_ppl as sp
from spiral_ppl import plots
from spiral_ppl.inference.spiral.recipe import DEFAULT_SCHEDULE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.grammars import Discs, notebook_grammar  # noqa: E402

out = Path(sys.argv[1])
minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
seeds = [int(seed) for seed in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
out.mkdir(parents=True, exist_ok=True)

GRAMMARS = {
    "blocks": lambda: notebook_grammar("custom_grammar.ipynb", "Blocks")(steps=3, priors={"present": [0.3, 0.7]}),
    "discs": lambda: Discs(steps=4),
}
EVALUATE_EVERY = 20.0  # seconds of training time between points of the curve


def measure(name: str, seed: int) -> dict:
    prog = GRAMMARS[name]()
    train = prog.render(prog.sample_prior(2000, generator=torch.Generator().manual_seed(1000 + seed)))
    held = prog.render(prog.sample_prior(64, generator=torch.Generator().manual_seed(2000 + seed)))
    blank = float(sp.programs.base.mean_squared_error(prog.blank_canvas(64), held).mean())
    torch.manual_seed(seed)
    agent = sp.inference.Spiral(prog, device="cpu")
    curve = [(0.0, 0, float(sp.programs.base.mean_squared_error(agent.one_pass(held), held).mean()), "untrained")]
    share_ends = torch.tensor([share for _, share, _ in DEFAULT_SCHEDULE]).cumsum(0) * minutes * 60

    def record(metrics: dict) -> None:
        if metrics["seconds"] - curve[-1][0] >= EVALUATE_EVERY:
            l2 = float(sp.programs.base.mean_squared_error(agent.one_pass(held), held).mean())
            phase = DEFAULT_SCHEDULE[int((share_ends < metrics["seconds"]).sum().clamp(max=len(share_ends) - 1))][0]
            curve.append((metrics["seconds"], metrics["update"], l2, phase))

    agent.fit(train, minutes=minutes, callback=record)
    one = agent.infer(prog, held, sp.Budget(renders=prog.steps), seed=0)
    guided = agent.smc().infer(prog, held, sp.Budget(renders=100), seed=0)
    prior = sp.inference.SMC.paper_baseline().infer(prog, held, sp.Budget(renders=100), seed=0)
    row = {"grammar": name, "seed": seed, "minutes": minutes, "updates": agent.learner.updates,
           "blank_l2": blank, "one_pass_l2": float(one.l2.mean()), "guided_smc_100_l2": float(guided.l2.mean()),
           "prior_smc_100_l2": float(prior.l2.mean())}
    row["one_pass_vs_blank"] = row["one_pass_l2"] / blank
    row["guided_vs_prior_smc"] = row["guided_smc_100_l2"] / row["prior_smc_100_l2"]
    curve.append((agent.train_seconds, agent.learner.updates, row["one_pass_l2"], curve[-1][3]))
    plots.training_curve(curve, out / f"{name}_{seed}_curve.png",
                         baselines={"blank canvas": blank, "prior SMC, 100 renders": row["prior_smc_100_l2"],
                                    "guided SMC, 100 renders": row["guided_smc_100_l2"]},
                         title=f"{name}: Spiral(prog).fit(images, minutes={minutes:g})", log_scale=True)
    plots.reconstruction_grid(held[:8], {"one pass": one.images[:8], "guided SMC 100": guided.images[:8],
                                         "prior SMC 100": prior.images[:8]}, out / f"{name}_{seed}_grid.png")
    plots.plt.close("all")
    print({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}, flush=True)
    return row


rows = [measure(name, seed) for name in GRAMMARS for seed in seeds]
with open(out / "results.csv", "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
lines = [f"# Spiral(prog).fit(images, minutes={minutes:g}), defaults only", "",
         "| grammar | seed | updates | blank | one pass | one pass / blank | guided SMC 100 | prior SMC 100 | "
         "guided / prior |", "|---|---|---|---|---|---|---|---|---|"]
lines += [f"| {r['grammar']} | {r['seed']} | {r['updates']} | {r['blank_l2']:.4f} | {r['one_pass_l2']:.4f} | "
          f"{r['one_pass_vs_blank']:.2f} | {r['guided_smc_100_l2']:.4f} | {r['prior_smc_100_l2']:.4f} | "
          f"{r['guided_vs_prior_smc']:.2f} |" for r in rows]
(out / "results.md").write_text("\n".join(lines) + "\n")
