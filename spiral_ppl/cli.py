"""The ``spiral-ppl`` command line.

::

    spiral-ppl render PROGRAM.json -o canvas.png      # a program file to a picture
    spiral-ppl infer IMAGE --engine importance        # a picture to a program file
    spiral-ppl demo --out runs/demo                   # head to head on MNIST test digits

Run ``spiral-ppl COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable


import spiral_ppl as sp
from spiral_ppl import io
from spiral_ppl.inference.engine import Engine

#: Engines the command line can build by name, each from the options of ``infer``/``demo``.
ENGINES: dict[str, Callable[[argparse.Namespace], Engine]] = {
    "importance": lambda options: sp.inference.Importance(),
    "mcmc": lambda options: sp.inference.MCMC(chains=4),
    "smc": lambda options: sp.inference.SMC(),
}


def _add_brush_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="strokes per program (default: 20)")
    parser.add_argument("--canvas-size", type=int, default=64, help="canvas side in pixels (default: 64)")
    parser.add_argument("--grid-size", type=int, default=32, help="side of the grid of stroke points (default: 32)")
    parser.add_argument("--color", action="store_true", help="paint in colour (RGB components)")


def _brush_program(options: argparse.Namespace) -> sp.programs.PaintProgram:
    brush = sp.renderers.Brush(canvas_size=options.canvas_size, grid_size=options.grid_size, color=options.color)
    return sp.programs.PaintProgram(brush, steps=options.steps)


def command_render(options: argparse.Namespace) -> int:
    renderer, actions = io.load_program(options.program)
    if options.scale != 1:
        if not hasattr(renderer, "with_canvas_size"):
            raise ValueError(f"{type(renderer).__name__} cannot re-render at another resolution")
        renderer = renderer.with_canvas_size(renderer.image_size * options.scale)
    io.save_image(options.output, renderer.render(actions)[0])
    print(f"wrote {options.output} ({renderer.image_size}x{renderer.image_size}, {next(iter(actions.values())).shape[1]} steps)")
    return 0


def command_infer(options: argparse.Namespace) -> int:
    prog = _brush_program(options)
    target = io.load_image(options.image, prog.channels, prog.image_size, invert=options.invert)
    engine = ENGINES[options.engine](options)
    result = engine.infer(prog, target, sp.Budget(renders=options.renders), seed=options.seed)
    out = Path(options.out)
    io.save_image(out / "reconstruction.png", result.images[0])
    summary = {
        "engine": result.engine,
        "l2": float(result.l2[0]),
        "renders": int(result.renders[0]),
        "seconds": result.seconds,
        "ess": None if result.ess is None else float(result.ess[0]),
        "log_evidence": None if result.log_evidence is None else float(result.log_evidence[0]),
    }
    io.save_program(out / "program.json", prog.renderer, {k: v[0] for k, v in result.actions.items()}, result=summary)
    print(json.dumps(summary))
    print(f"wrote {out / 'reconstruction.png'} and {out / 'program.json'}")
    return 0


def command_demo(options: argparse.Namespace) -> int:
    from spiral_ppl import plots

    digits = sp.data.MNIST(root=options.data, split="test", image_size=options.canvas_size)
    images = digits.images(range(options.digits))
    options.color = False
    prog = _brush_program(options)
    engines = {name: ENGINES[name](options) for name in options.engines}
    table = sp.compare(prog, images, engines=engines, budgets=options.budgets, seeds=[options.seed])
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv")
    largest = max(options.budgets)
    best = {name: table.results[(name, largest, options.seed)] for name in engines}
    blank = float(images.pow(2).flatten(1).mean(1).mean())
    plots.plot_curves(best, out / "l2_vs_renders.png", title=f"{options.digits} MNIST test digits", blank_l2=blank)
    plots.reconstruction_grid(images, {name: r.images for name, r in best.items()}, out / "reconstructions.png")
    report = (
        f"# Head to head on {options.digits} MNIST test digits\n\n"
        f"Program: {prog!r}\n\nMean l2 of a blank canvas: {blank:.5f}\n\n"
        + table.to_markdown()
        + "\n![l2 against renders](l2_vs_renders.png)\n\n![reconstructions](reconstructions.png)\n"
    )
    (out / "report.md").write_text(report)
    print(table.to_markdown())
    print(f"wrote {out / 'report.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spiral-ppl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render a program file (JSON) to a PNG")
    render.add_argument("program", help="program file: {'renderer': {...}, 'steps': [{component: value}, ...]}")
    render.add_argument("-o", "--output", default="canvas.png", help="PNG to write (default: canvas.png)")
    render.add_argument("--scale", type=int, default=1, help="re-render at this many times the resolution")
    render.set_defaults(run=command_render)

    infer = commands.add_parser("infer", help="infer a program for an image and write it with its reconstruction")
    infer.add_argument("image", help="image file (PNG, JPEG, ...); light ink on a dark background unless --invert")
    infer.add_argument("--engine", choices=sorted(ENGINES), default="importance", help="inference engine")
    infer.add_argument("--renders", type=int, default=1000, help="renderer calls allowed (default: 1000)")
    infer.add_argument("--invert", action="store_true", help="the image has dark ink on a light background")
    infer.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    infer.add_argument("--out", default="inferred", help="output folder (default: inferred)")
    _add_brush_options(infer)
    infer.set_defaults(run=command_infer)

    demo = commands.add_parser("demo", help="head-to-head of the engines on MNIST test digits, with a report")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--data", default=None, help="folder of the MNIST IDX files (default: $SPIRAL_PPL_DATA/mnist)")
    demo.add_argument("--digits", type=int, default=8, help="number of test digits (default: 8)")
    demo.add_argument("--budgets", type=int, nargs="+", default=[100, 1000], help="renders per digit")
    demo.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    demo.add_argument("--seed", type=int, default=0)
    _add_brush_options(demo)
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        return options.run(options)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"spiral-ppl {options.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
