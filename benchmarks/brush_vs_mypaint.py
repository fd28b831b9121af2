"""Brush against MyPaint (libmypaint's classic/dry_brush): fidelity, speed, a picture.

Fidelity is the mean squared pixel difference (l2) between the two engines' renders of the
same uniformly random programs, for single strokes (a jump, then one stroke) and for
20-step programs (the paper's episode length). "Before" is Brush's default hard pen
(``width_scale=1, softness=0, opacity_exponent=1``); "after" is ``Brush(**DRY_BRUSH_LOOK)``,
fitted by ``--tune`` (a grid search on programs other than the ones reported; a coarser
search over width_scale 0.8-2.5, softness 0-2, opacity_exponent 0.25-1 came first).

Speed is strokes painted per second on this machine's CPU, every stroke inked (flag 1), at
batch 1, 64 and 1024, for Brush (DRY_BRUSH_LOOK) compiled and eager, and MyPaint in this
process and over worker processes.

Run from the repository root::

    SPIRAL_PPL_COMPILE=1 .venv/bin/python benchmarks/brush_vs_mypaint.py --speed --figure docs/brush_vs_mypaint.png
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

import spiral_ppl as sp

#: Brush before tuning: the default hard pen (strokes exactly ``size`` wide, opacity = pressure).
HARD_PEN = dict(width_scale=1.0, softness=0.0, opacity_exponent=1.0)
#: Brush after tuning.
DRY_BRUSH_LOOK = sp.renderers.DRY_BRUSH_LOOK


def random_programs(renderer, batch, steps, seed, single_strokes=False):
    """Uniformly random programs; ``single_strokes``: a jump to a random start, then one stroke."""
    generator = torch.Generator().manual_seed(seed)
    actions = {c.name: torch.randint(0, c.size, (batch, steps), generator=generator) for c in renderer.action_space}
    if single_strokes:
        actions["flag"][:, 0] = 0
        actions["flag"][:, 1:] = 1
    return actions


def program_sets(renderer, seed, programs=64):
    return {
        "single stroke": random_programs(renderer, 256, 2, seed, single_strokes=True),
        "20-step program": random_programs(renderer, programs, 20, seed + 1),
    }


def fidelity(brush_settings: dict, references: dict, sets: dict) -> dict[str, float]:
    """Mean l2 to the MyPaint references of a Brush built with ``brush_settings``."""
    brush = sp.renderers.Brush(compile=False, **brush_settings)
    return {name: (brush.render(actions) - references[name]).pow(2).mean().item() for name, actions in sets.items()}


def tune(mypaint) -> dict:
    """Grid search of Brush's look on tuning programs (seed 0); prints the best settings."""
    sets = program_sets(mypaint, seed=0, programs=48)
    references = {name: mypaint.render(actions) for name, actions in sets.items()}
    results = []
    grid = itertools.product([1.3, 1.4, 1.5, 1.6], [1.25, 1.5, 1.75], [0.5, 0.6, 0.7, 0.8])
    for width_scale, softness, exponent in grid:
        settings = dict(width_scale=width_scale, softness=softness, opacity_exponent=exponent)
        l2 = fidelity(settings, references, sets)
        # Single strokes weigh in at full weight, whole programs at half (their canvases saturate).
        results.append((l2["single stroke"] + l2["20-step program"] / 2, settings, l2))
    results.sort(key=lambda result: result[0])
    for score, settings, l2 in results[:5]:
        print(f"tune: {settings} -> {l2}", flush=True)
    return results[0][1]


def strokes_per_second(engines: dict, batch: int, steps: int, rounds: int = 3, seconds: float = 0.5) -> dict:
    """Best rate of each engine over ``rounds`` rounds of at least ``seconds``, the engines taking
    turns within a round so that load from other work on the machine hits them alike."""
    actions = random_programs(next(iter(engines.values())), batch, steps, seed=7)
    actions["flag"][:] = 1
    for engine in engines.values():
        engine.render(actions)  # warm up: compile Brush's kernel, start MyPaint's workers
    best = dict.fromkeys(engines, 0.0)
    for _ in range(rounds):
        for name, engine in engines.items():
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
                engine.render(actions)
                calls += 1
            best[name] = max(best[name], calls * batch * steps / elapsed)
    return best


def speed_table() -> list[dict]:
    engines = {
        "Brush (compiled)": sp.renderers.Brush(compile=True, **DRY_BRUSH_LOOK),
        "Brush (eager)": sp.renderers.Brush(compile=False, **DRY_BRUSH_LOOK),
        "MyPaint": sp.renderers.MyPaint(),
        "MyPaint (2 workers)": sp.renderers.MyPaint(workers=2),
    }
    rows = []
    for batch, steps in ((1, 20), (64, 2), (1024, 1)):
        rate = strokes_per_second(engines, batch, steps)
        rows.append({"batch": batch, **rate})
        print(
            f"batch {batch:5d}: "
            + ", ".join(f"{name} {value:,.0f}/s" for name, value in rate.items())
            + f"; Brush compiled / MyPaint = {rate['Brush (compiled)'] / rate['MyPaint']:.1f}x, "
            f"eager / MyPaint = {rate['Brush (eager)'] / rate['MyPaint']:.1f}x, "
            f"MyPaint 2 workers / 1 = {rate['MyPaint (2 workers)'] / rate['MyPaint']:.2f}x",
            flush=True,
        )
    engines["MyPaint (2 workers)"].close()
    return rows


def figure(path: str, mypaint, count: int = 8) -> None:
    """The same random 20-step programs by MyPaint, tuned Brush and the hard pen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actions = random_programs(mypaint, count, 20, seed=11)
    rows = {
        "MyPaint\nclassic/dry_brush": mypaint.render(actions),
        "Brush\n(DRY_BRUSH_LOOK)": sp.renderers.Brush(compile=False, **DRY_BRUSH_LOOK).render(actions),
        "Brush\n(default hard pen)": sp.renderers.Brush(compile=False).render(actions),
    }
    fig, axes = plt.subplots(len(rows), count, figsize=(1.6 * count, 1.75 * len(rows)))
    for row, (label, images) in zip(axes, rows.items()):
        for column, (axis, image) in enumerate(zip(row, images)):
            axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, fontsize=9)
    fig.suptitle("The same random 20-stroke programs on three paint engines (64x64)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tune", action="store_true", help="grid-search Brush's look on tuning programs")
    parser.add_argument("--speed", action="store_true", help="measure strokes per second")
    parser.add_argument("--figure", help="write the side-by-side picture to this path")
    args = parser.parse_args()

    mypaint = sp.renderers.MyPaint()
    if args.tune:
        tune(mypaint)
    sets = program_sets(mypaint, seed=50)  # held out from the tuning programs
    references = {name: mypaint.render(actions) for name, actions in sets.items()}
    before = fidelity(HARD_PEN, references, sets)
    after = fidelity(DRY_BRUSH_LOOK, references, sets)
    for name in sets:
        print(f"fidelity, {name}: mean l2 Brush vs MyPaint {before[name]:.4f} before tuning, {after[name]:.4f} after")
    if args.speed:
        speed_table()
    if args.figure:
        figure(args.figure, mypaint)


if __name__ == "__main__":
    main()
