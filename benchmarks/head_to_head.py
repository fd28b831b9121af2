"""The head-to-head measurement: held-out targets, every engine, the same budgets.

``python benchmarks/head_to_head.py {mnist,scenes} OUT [--targets 100] [--passes 1,10,100]
[--engines spiral,spiral-smc,smc,mcmc] [--search-renders 10000] [--search-engines smc,mcmc]``

``mnist`` inverts MNIST test digits with the program of the shipped ``mnist-recon-cpu``
agent; ``scenes`` inverts held-out MUJOCO SCENES (a seed the agent never trained on) with
``scenes-recon-cpu``'s program. Every engine gets budgets of ``--passes`` passes' worth of
renders (``steps`` renders a pass). Writes the report, the CSV and the plots into ``OUT``.
``smc`` and ``mcmc`` are the search engines' defaults, the strongest settings found;
``smc-paper`` and ``mcmc-paper`` the paper's baselines (``paper_baseline()``);
``spiral-smc-cooled`` SPIRAL-guided SMC followed by the search defaults' cooling.

``--search-renders`` (e.g. 10000, the budget of the paper's Figure 9 claim) additionally runs
the ``--search-engines`` alone at that many renders per target, on the same targets, into
``OUT/search_RENDERS.{md,csv}``: what SPIRAL's one pass is measured against, with the paired
difference between the two on the shared targets (:func:`spiral_ppl.paired_difference`).
"""

import argparse
import tempfile
from pathlib import Path

import torch

import spiral_ppl as sp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("task", choices=["mnist", "scenes"])
parser.add_argument("out", type=Path)
parser.add_argument("--targets", type=int, default=100)
parser.add_argument("--passes", default="1,10,100", help="budgets in passes' worth of renders, comma-separated")
parser.add_argument("--engines", default="spiral,spiral-smc,smc,mcmc")
parser.add_argument("--search-renders", type=int, default=None)
parser.add_argument("--search-engines", default="smc,mcmc")
options = parser.parse_args()
out, count = options.out, options.targets
torch.manual_seed(0)

if options.task == "mnist":
    agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
    targets = sp.data.MNIST(split="test").images(range(count))
else:
    agent = sp.inference.Spiral.pretrained("scenes-recon-cpu", device="cpu")
    held_out = sp.data.MujocoScenes(root=tempfile.mkdtemp(), size=count, seed=12345, progress=False)
    targets = torch.stack([held_out[i][0] for i in range(count)])

prog = agent.prog
budgets = [prog.steps * int(p) for p in options.passes.split(",")]
available = {
    "spiral": lambda: agent,
    "spiral-smc": agent.smc,
    "spiral-smc-cooled": lambda: agent.smc(cooling=40.0),
    "smc": sp.inference.SMC,
    "mcmc": sp.inference.MCMC,
    "smc-paper": sp.inference.SMC.paper_baseline,
    "mcmc-paper": sp.inference.MCMC.paper_baseline,
}


def engines_named(names: str) -> dict[str, sp.inference.Engine]:
    unknown = sorted(set(names.split(",")) - set(available))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose among {sorted(available)}")
    return {name: available[name]() for name in names.split(",")}


engines = engines_named(options.engines)
table = sp.compare(prog, targets, engines=engines, budgets=budgets)
report = table.write_report(out, prog, targets,
                            title=f"{options.task}: {count} held-out targets, {prog.steps}-step program")
print(table.to_markdown())
print(f"wrote {report}")

if options.search_renders:
    search_budget = options.search_renders
    search = sp.compare(prog, targets, engines=engines_named(options.search_engines), budgets=[search_budget])
    search.to_csv(out / f"search_{search_budget}.csv")
    lines = [f"# {out.name}: the search engines at {search_budget} renders per target", search.to_markdown()]
    if "spiral" in engines and prog.steps in budgets:  # the targets are shared, so the gap is paired
        one_pass = table.results[("spiral", prog.steps, 0)]
        for name in search.results:
            gap = sp.paired_difference(one_pass, search.results[name])
            lines.append(f"SPIRAL's one pass ({prog.steps} renders) minus {name[0]} at {search_budget} renders, "
                         f"target by target: {gap['mean']:+.5f} ± {gap['se']:.5f} (paired s.e.); the one pass "
                         f"is lower on {gap['first_lower']:.0%} of the {gap['targets']} targets")
    (out / f"search_{search_budget}.md").write_text("\n\n".join(lines) + "\n")
    print("\n\n".join(lines))
