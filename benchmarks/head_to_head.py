"""The head-to-head measurement: held-out targets, every engine, the same budgets.

``python benchmarks/head_to_head.py mnist OUT [TARGETS] [PASSES] [SEARCH_RENDERS] [SEARCH_ENGINES]``
inverts MNIST test digits with the program of the shipped ``mnist-recon-cpu`` agent; ``scenes``
inverts held-out MUJOCO SCENES (a seed the agent never trained on) with
``scenes-recon-cpu``'s program. Every engine gets budgets of ``PASSES`` (comma-separated,
default 1,10,100) passes' worth of renders (``steps`` renders a pass). Writes the report,
the CSV and the plots into ``OUT``.

``SEARCH_RENDERS`` (e.g. 10000, the budget of the paper's Figure 9 claim) additionally runs
blocked MH and prior SMC (or the engines named by a comma-separated sixth argument, such as
``mcmc``) alone at that many renders per target, on the same targets, into
``OUT/search_SEARCH_RENDERS.{md,csv}``: what SPIRAL's one pass is measured against, with the
paired difference between the two on the shared targets (:func:`spiral_ppl.paired_difference`).
"""

import sys
import tempfile
from pathlib import Path

import torch

import spiral_ppl as sp

task, out = sys.argv[1], Path(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 100
torch.manual_seed(0)

if task == "mnist":
    agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
    targets = sp.data.MNIST(split="test").images(range(count))
elif task == "scenes":
    agent = sp.inference.Spiral.pretrained("scenes-recon-cpu", device="cpu")
    held_out = sp.data.MujocoScenes(root=tempfile.mkdtemp(), size=count, seed=12345, progress=False)
    targets = torch.stack([held_out[i][0] for i in range(count)])
else:
    raise SystemExit("task must be 'mnist' or 'scenes'")

prog = agent.prog
passes = [1, 10, 100] if len(sys.argv) <= 4 else [int(p) for p in sys.argv[4].split(",")]
budgets = [prog.steps * p for p in passes]
engines = {
    "spiral": agent,
    "spiral-smc": agent.smc(),
    "smc": sp.inference.SMC(),
    "mcmc": sp.inference.MCMC(chains=4),
}
table = sp.compare(prog, targets, engines=engines, budgets=budgets)
report = table.write_report(out, prog, targets, title=f"{task}: {count} held-out targets, {prog.steps}-step program")
print(table.to_markdown())
print(f"wrote {report}")

if len(sys.argv) > 5:
    search_budget = int(sys.argv[5])
    searches = sys.argv[6].split(",") if len(sys.argv) > 6 else ["smc", "mcmc"]
    if not set(searches) <= set(engines):
        raise SystemExit(f"SEARCH_ENGINES must name engines among {sorted(engines)}, got {searches}")
    search = sp.compare(prog, targets, engines={name: engines[name] for name in searches}, budgets=[search_budget])
    search.to_csv(out / f"search_{search_budget}.csv")
    lines = [f"# {out.name}: the search engines at {search_budget} renders per target", search.to_markdown()]
    if prog.steps in budgets:  # the targets are shared, so the gap to SPIRAL's one pass is paired
        one_pass = table.results[("spiral", prog.steps, 0)]
        for name in search.results:
            gap = sp.paired_difference(one_pass, search.results[name])
            lines.append(f"SPIRAL's one pass ({prog.steps} renders) minus {name[0]} at {search_budget} renders, "
                         f"target by target: {gap['mean']:+.5f} ± {gap['se']:.5f} (paired s.e.); the one pass "
                         f"is lower on {gap['first_lower']:.0%} of the {gap['targets']} targets")
    (out / f"search_{search_budget}.md").write_text("\n\n".join(lines) + "\n")
    print("\n\n".join(lines))
