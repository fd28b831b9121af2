"""Agents on Omniglot: held-out l2 on the evaluation set, and inferred strokes against how people
drew the characters.

For each agent (a pretrained name or an agent file, all on the same program):

- l2 on ``--eval-targets`` drawings of the evaluation set, spread evenly over it so that they
  span its 20 alphabets: one greedy pass, and the best of 10 passes;
- parsing on ``--count`` drawings of ``background_small1``, spread evenly over its 5 alphabets
  (alphabets that ``omniglot-recon-cpu`` leaves out of its training, ``[data] train_exclude``):
  an engine's program for the 64x64 image is turned into pen paths (consecutive drawing steps
  joined, a jump lifting the pen) and compared with the drawer's ground-truth strokes: number of
  strokes and the symmetric Chamfer distance in pixels of the 64x64 canvas
  (:mod:`spiral_ppl.metrics`). Engines: the agent's one pass and its guided SMC at
  ``--renders``; SMC from the prior (the paper's form) at the same renders once, for reference.

Writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/reconstructions.png`` (evaluation-set
drawings and each agent's one pass).

Run: ``SPIRAL_PPL_DATA=../shared/data .venv/bin/python benchmarks/omniglot_parsing.py OUT
--agents mnist-recon-cpu,omniglot-recon-cpu``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import spiral_ppl as sp
from spiral_ppl.metrics import parsing_scores, pen_paths
from spiral_ppl.plots import plt, reconstruction_grid


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    return [int(index) for index in np.linspace(0, total - 1, count).round()]


def held_out_l2(agent: sp.inference.Spiral, targets: torch.Tensor) -> dict[str, float]:
    prog = agent.prog
    one_pass = agent.infer(prog, targets, sp.Budget(renders=prog.steps), seed=0)
    best_of_10 = agent.infer(prog, targets, sp.Budget(renders=10 * prog.steps), seed=0)
    return {"one_pass": float(one_pass.l2.mean()), "one_pass_se": float(one_pass.l2.std() / len(targets) ** 0.5),
            "best_of_10": float(best_of_10.l2.mean()), "images": one_pass.images}


def parsing(engine, prog, targets: torch.Tensor, drawings, renders: int) -> dict[str, float]:
    result = engine.infer(prog, targets, sp.Budget(renders=renders), seed=0)
    scores = []
    for index, drawing in enumerate(drawings):
        paths = pen_paths(prog.renderer, {k: v[index] for k, v in result.actions.items()})
        if paths:
            scores.append(parsing_scores(paths, drawing.scaled(prog.image_size)))
    return {
        "renders": renders,
        "mean_l2": float(result.l2.mean()),
        "drawings_with_ink": len(scores),
        "mean_inferred_strokes": float(np.mean([s["inferred_strokes"] for s in scores])),
        "mean_true_strokes": float(np.mean([len(d.strokes) for d in drawings])),
        "mean_stroke_count_error": float(np.mean([s["stroke_count_error"] for s in scores])),
        "mean_chamfer_px": float(np.mean([s["chamfer"] for s in scores])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--agents", default="mnist-recon-cpu,omniglot-recon-cpu",
                        help="comma-separated pretrained names or agent files")
    parser.add_argument("--eval-targets", type=int, default=256)
    parser.add_argument("--count", type=int, default=100, help="drawings of background_small1 to parse")
    parser.add_argument("--renders", type=int, default=600, help="renders of the SMC engines per drawing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    agents = {name: sp.inference.Spiral.named(name, device="cpu") for name in args.agents.split(",")}
    prog = next(iter(agents.values())).prog
    if len({repr(agent.prog) for agent in agents.values()}) > 1:
        raise SystemExit("the agents act on different programs; compare agents of one program")
    evaluation = sp.data.Omniglot(split="evaluation", image_size=prog.image_size)
    eval_targets = evaluation.images(spread(len(evaluation), args.eval_targets))
    images = sp.data.Omniglot(split="background_small1", source="png", image_size=prog.image_size, download=False)
    strokes = sp.data.OmniglotStrokes(split="background_small1", download=False)
    # PNG members are sorted like stroke files, so item i of both is the same drawing.
    chosen = spread(len(strokes), args.count)
    drawings = [strokes[i] for i in chosen]
    parse_targets = images.images(chosen)
    assert all(int(images.character_ids[i]) == drawing.character_id for i, drawing in zip(chosen, drawings))

    blank = float(eval_targets.pow(2).flatten(1).mean(1).mean())
    summary = {"evaluation_blank_l2": blank, "evaluation_targets": len(eval_targets), "agents": {}}
    reconstructions = {}
    for name, agent in agents.items():
        l2 = held_out_l2(agent, eval_targets)
        reconstructions[Path(name).stem] = l2.pop("images")[:12]
        summary["agents"][name] = {
            "evaluation": l2,
            "parsing_one_pass": parsing(agent, prog, parse_targets, drawings, prog.steps),
            "parsing_guided_smc": parsing(agent.smc(), prog, parse_targets, drawings, args.renders),
        }
        print(name, json.dumps(summary["agents"][name]), flush=True)
    summary["parsing_prior_smc"] = parsing(sp.inference.SMC.paper_baseline(), prog, parse_targets, drawings,
                                           args.renders)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    plt.close(reconstruction_grid(eval_targets[:12], reconstructions, args.out / "reconstructions.png"))

    rows = ["| agent | evaluation set: one pass | best of 10 | background_small1: engine | renders | l2 | "
            "strokes (people's: {:.2f}) | stroke-count error | Chamfer (px) |".format(
                summary["parsing_prior_smc"]["mean_true_strokes"]),
            "|---|---:|---:|---|---:|---:|---:|---:|---:|"]

    def parse_cells(scores):
        return (f"{scores['renders']} | {scores['mean_l2']:.4f} | {scores['mean_inferred_strokes']:.2f} | "
                f"{scores['mean_stroke_count_error']:.2f} | {scores['mean_chamfer_px']:.2f}")

    for name, result in summary["agents"].items():
        evaluation_l2 = result["evaluation"]
        rows.append(f"| {name} | {evaluation_l2['one_pass']:.4f} ± {evaluation_l2['one_pass_se']:.4f} | "
                    f"{evaluation_l2['best_of_10']:.4f} | one pass | {parse_cells(result['parsing_one_pass'])} |")
        rows.append(f"| | | | guided SMC | {parse_cells(result['parsing_guided_smc'])} |")
    rows.append(f"| (no agent) | blank: {blank:.4f} | | SMC from the prior | "
                f"{parse_cells(summary['parsing_prior_smc'])} |")
    heading = "# Omniglot: " + " against ".join(Path(name).stem for name in agents)
    (args.out / "results.md").write_text(heading + "\n\n" + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
