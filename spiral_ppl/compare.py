"""Head to head: every engine on the same targets under the same renderer-call budgets.

:func:`compare` runs each engine once per budget and seed on the same images and collects
one record per (engine, budget): mean l2 with its standard error over targets and seeds,
renders spent per target, wall-clock seconds, and ESS and log-evidence where the engine
defines them. Renders are metered by the program (one place), so budgets mean the same
thing for every engine.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=1)
    >>> images = prog.render({c.name: torch.ones(2, 1, dtype=torch.long) for c in prog.action_space})
    >>> table = sp.compare(prog, images, engines={"prior IS": sp.inference.Importance()}, budgets=[10, 100])
    >>> [(r["engine"], r["budget"], r["renders"]) for r in table.records]
    [('prior IS', 10, 10.0), ('prior IS', 100, 100.0)]
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from spiral_ppl import checks
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine
from spiral_ppl.inference.result import Result
from spiral_ppl.programs.base import Program, mean_squared_error

COLUMNS = ("engine", "budget", "mean_l2", "se_l2", "renders", "seconds", "ess", "log_evidence", "compile_seconds")


@dataclass
class Comparison:
    """Records of a head-to-head run, plus every :class:`Result` keyed by (engine, budget, seed)."""

    records: list[dict] = field(default_factory=list)
    results: dict[tuple[str, int, int], Result] = field(default_factory=dict)

    def to_csv(self, path: str | Path) -> None:
        # An int would be taken by open() as a file descriptor.
        with open(checks.path("path", path), "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.records)

    def write_report(self, out: str | Path, prog: Program, targets: torch.Tensor, title: str) -> Path:
        """Write ``report.md`` with the table, ``results.csv`` and the plots into ``out``.

        The plots are the best l2 so far against renders (each engine's run at the largest
        budget as a line, its mean l2 at every budget as markers) and the reconstructions of
        every engine at the largest budget (first seed; the first 12 targets).
        """
        from spiral_ppl import plots

        if not self.results:
            raise ValueError("this comparison holds no results to report: fill it with sp.compare(...) first")
        out = checks.path("out", out)
        targets = prog.check_images(targets, name="targets")
        out.mkdir(parents=True, exist_ok=True)
        self.to_csv(out / "results.csv")
        budget = max(key[1] for key in self.results)
        seed = min(key[2] for key in self.results)
        engines = list(dict.fromkeys(key[0] for key in self.results))
        best = {name: self.results[(name, budget, seed)] for name in engines if (name, budget, seed) in self.results}
        blank = float(mean_squared_error(prog.blank_canvas(1, device=targets.device), targets).mean())
        by_budget = {
            name: ([r["renders"] for r in self.records if r["engine"] == name],
                   [r["mean_l2"] for r in self.records if r["engine"] == name])
            for name in engines
        }
        plots.plot_curves(best, out / "l2_vs_renders.png", title=title, blank_l2=blank, budgets=by_budget)
        shown = slice(0, min(targets.shape[0], 12))  # a grid people can read
        plots.reconstruction_grid(targets[shown], {name: result.images[shown] for name, result in best.items()},
                                  out / "reconstructions.png")
        report = (
            f"# {title}\n\nProgram: `{prog!r}`\n\n{targets.shape[0]} targets; mean l2 of a blank canvas: "
            f"{blank:.5f}. Budgets are renderer calls per target.\n\n{self.to_markdown()}\n"
            f"![l2 against renders at {budget} renders per target](l2_vs_renders.png)\n\n"
            f"![reconstructions at {budget} renders per target](reconstructions.png)\n"
        )
        (out / "report.md").write_text(report)
        return out / "report.md"

    def to_markdown(self) -> str:
        header = "| engine | renders / target | mean l2 | ± s.e. | seconds | ESS | log evidence |"
        lines = [header, "|" + "---|" * 7]
        for record in self.records:
            optional = [
                "–" if record[key] is None or math.isnan(record[key]) else f"{record[key]:.4g}"
                for key in ("ess", "log_evidence")
            ]
            lines.append(
                f"| {record['engine']} | {record['renders']:.0f} | {record['mean_l2']:.5f} | {record['se_l2']:.5f} "
                f"| {record['seconds']:.2f} | {optional[0]} | {optional[1]} |"
            )
        compiled = sum(record.get("compile_seconds", 0.0) for record in self.records)
        if compiled > 0:
            lines.append(f"\nSeconds leave out the {compiled:.1f} s spent compiling kernels on their first call "
                         "(a one-off cost of the process, whichever engine met it first).")
        return "\n".join(lines) + "\n"


def compare(
    prog: Program,
    images: torch.Tensor,
    engines: Mapping[str, Engine],
    budgets: Iterable[int],
    seeds: Iterable[int] = (0,),
) -> Comparison:
    """Run every engine on ``images`` at every budget (renders per target) and seed."""
    if not isinstance(engines, Mapping):
        raise TypeError("engines must map a name to each engine, e.g. {'importance': sp.inference.Importance()}, "
                        f"got {type(engines).__name__}")
    if not engines:
        raise ValueError("engines must name at least one engine, e.g. {'importance': sp.inference.Importance()}")
    for name, engine in engines.items():
        if not isinstance(engine, Engine):
            raise TypeError(f"engine {name!r} must be a spiral_ppl.inference.Engine, got {type(engine).__name__}")
    if not isinstance(prog, Program):
        raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
    budgets = checks.int_list("budgets", budgets, example="[100, 1000] (renders per target)")
    seeds = checks.int_list("seeds", seeds, example="[0, 1, 2]")
    budgets = [Budget(renders=b).renders for b in budgets]
    if not budgets or not seeds:
        raise ValueError("compare needs at least one budget and one seed")
    if len(set(budgets)) != len(budgets) or len(set(seeds)) != len(seeds):
        # a repeated seed would be averaged as if it were another independent run
        raise ValueError(f"budgets and seeds must not repeat, got budgets={budgets} and seeds={seeds}")
    bad_seeds = [seed for seed in seeds if not 0 <= seed < 2**32]
    if bad_seeds:  # found now rather than after the runs of the seeds before them
        raise ValueError(f"seeds must be ints in [0, 2**32), got {bad_seeds}")
    images = prog.check_images(images, name="images")
    comparison = Comparison()
    for name, engine in engines.items():
        for budget in budgets:
            runs = [engine.infer(prog, images, Budget(renders=budget), seed=seed) for seed in seeds]
            for seed, result in zip(seeds, runs):
                comparison.results[(name, budget, seed)] = result
            comparison.records.append(_record(name, budget, runs))
    return comparison


def paired_difference(first: Result, second: Result) -> dict[str, float]:
    r"""How much lower ``first``'s l2 is than ``second``'s, target by target, with its standard error.

    Engines in a comparison see the same targets, and some targets are hard for every engine,
    so the two engines' errors are correlated. Their separate standard errors then overstate
    the uncertainty of the gap between them; the paired one does not:

    .. math:: \bar d = \frac1B \sum_b (\ell_b^{(1)} - \ell_b^{(2)}), \qquad
        \mathrm{se}(\bar d) = \frac{\mathrm{sd}(d)}{\sqrt B}.

    :returns: ``{"mean": d_bar, "se": se, "first_lower": fraction of targets where first's l2
        is lower, "targets": B}``; a negative mean says ``first`` is the better.

    Example: ``paired_difference(table.results[("spiral", 10, 0)], search.results[("mcmc", 10000, 0)])``.
    """
    for name, result in (("first", first), ("second", second)):
        if not isinstance(result, Result):
            raise TypeError(f"{name} must be an engine's Result (such as comparison.results[(engine, budget, seed)]), "
                            f"got {type(result).__name__}")
    if first.l2.shape != second.l2.shape or first.l2.ndim != 1:
        raise ValueError(f"paired results must be on the same targets: l2 of shapes {tuple(first.l2.shape)} "
                         f"and {tuple(second.l2.shape)}")
    difference = first.l2.double().cpu() - second.l2.double().cpu()
    if not bool(torch.isfinite(difference).all()):
        raise ValueError("a result has a NaN or infinite l2; the engine that produced it needs fixing first")
    return {
        "mean": float(difference.mean()),
        "se": _standard_error(difference),
        "first_lower": float((difference < 0).double().mean()),
        "targets": difference.numel(),
    }


def _standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (0 for a single value)."""
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else 0.0


def _record(name: str, budget: int, runs: list[Result]) -> dict:
    l2 = torch.cat([result.l2.float().cpu() for result in runs])
    standard_error = _standard_error(l2)

    def mean_of(attribute: str) -> float | None:
        values = [getattr(result, attribute) for result in runs]
        if any(value is None for value in values):
            return None
        return float(torch.cat([value.float().cpu() for value in values]).mean())

    return {
        "engine": name,
        "budget": budget,
        "mean_l2": float(l2.mean()),
        "se_l2": standard_error,
        "renders": float(torch.cat([result.renders.float() for result in runs]).mean()),
        "seconds": sum(result.seconds for result in runs) / len(runs),
        "ess": mean_of("ess"),
        "log_evidence": mean_of("log_evidence"),
        "compile_seconds": sum(result.diagnostics.get("compile_seconds", 0.0) for result in runs) / len(runs),
    }
