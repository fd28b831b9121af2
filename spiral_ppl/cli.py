"""The ``spiral-ppl`` command line.

::

    spiral-ppl render PROGRAM.json -o canvas.png      # a program file to a picture
    spiral-ppl infer IMAGE --engine importance        # a picture to a program file
    spiral-ppl train mnist-recon --set train.steps=500 # train a SPIRAL agent (resumes a run folder)
    spiral-ppl compare mnist-recon --budgets 100 1000 # engines head to head on an experiment
    spiral-ppl demo --out runs/demo                   # head to head on MNIST digits and MuJoCo scenes

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


def _shipped() -> list[str]:
    from spiral_ppl import experiments

    return experiments.list_configs()


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


def _comparison(config_name: str, overrides: list[str], engines: list[str], budgets: list[int], targets: int,
                seeds: list[int], out: Path, options: argparse.Namespace) -> Path:
    from spiral_ppl import experiments

    config = experiments.load_config(config_name, overrides)
    prog = experiments.build_program(config)
    _, test = experiments.load_datasets(config, prog.image_size)
    images = experiments.target_images(test, targets)
    table = sp.compare(prog, images, engines={name: ENGINES[name](options) for name in engines},
                       budgets=budgets, seeds=seeds)
    print(table.to_markdown())
    return table.write_report(out, prog, images, title=f"{config['name']}: {targets} held-out targets")


def command_compare(options: argparse.Namespace) -> int:
    report = _comparison(options.config, options.set, options.engines, options.budgets, options.targets,
                         options.seeds, Path(options.out), options)
    print(f"wrote {report}")
    return 0


def command_train(options: argparse.Namespace) -> int:
    from spiral_ppl import experiments

    config = experiments.load_config(options.config, options.set)
    out = Path(options.out or Path("runs") / config["name"])
    agent = experiments.train_experiment(config, out, device=options.device, minutes=options.minutes)
    print(f"trained {agent.learner.updates} updates; run folder {out}")
    return 0


def command_demo(options: argparse.Namespace) -> int:
    out = Path(options.out)
    sections = []
    for config_name, budgets in (("mnist-recon", options.budgets), ("scenes-recon", options.scene_budgets)):
        report = _comparison(config_name, [], options.engines, budgets, options.targets, [options.seed],
                             out / config_name, options)
        sections.append(f"- [{config_name}]({report.relative_to(out)})")
    (out / "report.md").write_text(
        "# spiral_ppl head to head\n\nThe same held-out targets and renderer-call budgets for every engine:\n\n"
        + "\n".join(sections) + "\n"
    )
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

    compare = commands.add_parser("compare", help="head-to-head of engines on held-out targets of an experiment")
    compare.add_argument("config", help=f"experiment name or .toml file (shipped: {', '.join(_shipped())})")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a configuration value, e.g. --set program.steps=10")
    compare.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    compare.add_argument("--budgets", type=int, nargs="+", default=[100, 1000], help="renders per target")
    compare.add_argument("--targets", type=int, default=8, help="held-out targets (default: 8)")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0])
    compare.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    compare.set_defaults(run=command_compare)

    train = commands.add_parser("train", help="train a SPIRAL agent for one of the paper's experiments")
    train.add_argument("config", help=f"experiment name or .toml file (shipped: {', '.join(_shipped())})")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a configuration value, e.g. --set train.steps=100")
    train.add_argument("--out", default=None, help="run folder (default: runs/NAME); an existing one is resumed")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--minutes", type=float, default=None, help="stop after about this much training time")
    train.set_defaults(run=command_train)

    demo = commands.add_parser("demo", help="the main job: head-to-head on MNIST test digits and MUJOCO SCENES")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--targets", type=int, default=8, help="held-out targets per experiment (default: 8)")
    demo.add_argument("--budgets", type=int, nargs="+", default=[100, 1000], help="renders per digit")
    demo.add_argument("--scene-budgets", type=int, nargs="+", default=[100, 1000], help="renders per scene")
    demo.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    demo.add_argument("--seed", type=int, default=0)
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
