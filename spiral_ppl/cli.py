"""The ``spiral-ppl`` command line.

::

    spiral-ppl render PROGRAM.json -o canvas.png      # a program file to a picture
    spiral-ppl infer IMAGE --engine importance        # a picture to a program file
    spiral-ppl train mnist-recon --set train.steps=500 # train a SPIRAL agent (resumes a run folder)
    spiral-ppl train scenes-recon --workers 8          # ... with 8 rollout workers on Ray
    spiral-ppl pbt mnist-recon --population 4          # population-based training on Ray Tune
    spiral-ppl compare mnist-recon --budgets 100 1000 # engines head to head on an experiment
    spiral-ppl demo --out runs/demo                   # head to head on MNIST digits and MuJoCo scenes

Run ``spiral-ppl COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import spiral_ppl as sp
from spiral_ppl import io
from spiral_ppl.inference.engine import Engine

#: Engines the command line can build by name. The ``spiral*`` ones need an agent (``--agent``).
ENGINES: dict[str, Callable[[Any], Engine]] = {
    "importance": lambda agent: sp.inference.Importance(),
    "mcmc": lambda agent: sp.inference.MCMC(chains=4),
    "smc": lambda agent: sp.inference.SMC(),
    "spiral": lambda agent: agent,
    "spiral-smc": lambda agent: _named(agent.smc(), "spiral-smc"),
    "spiral-is": lambda agent: _named(sp.inference.Importance(agent.guide), "spiral-is"),
}
SEARCH_ENGINES = ["importance", "mcmc", "smc"]


def _named(engine: Engine, name: str) -> Engine:
    engine.name = name
    return engine


def _build_engines(names: list[str], agent) -> dict[str, Engine]:
    needs_agent = [name for name in names if name.startswith("spiral")]
    if needs_agent and agent is None:
        raise ValueError(f"engines {needs_agent} need a SPIRAL agent: pass --agent NAME_OR_PATH")
    return {name: ENGINES[name](agent) for name in names}


def _load_agent(name_or_path: str | None, options: argparse.Namespace | None = None):
    """A pretrained agent by name, or a checkpoint file, with the decoding ``options`` override;
    ``None`` passes through."""
    if name_or_path is None:
        return None
    if name_or_path in sp.inference.Spiral.pretrained_names():
        agent = sp.inference.Spiral.pretrained(name_or_path)
    elif Path(name_or_path).is_file():
        agent = sp.inference.Spiral.load(name_or_path)
    else:
        raise ValueError(
            f"--agent {name_or_path!r} is neither a pretrained agent {sp.inference.Spiral.pretrained_names()} "
            "nor a checkpoint file"
        )
    changes = {} if options is None else {
        name: value for name, value in (("temperature", options.temperature), ("greedy_first", options.greedy_first))
        if value is not None}
    return agent.with_decoding(**changes) if changes else agent


def _add_decoding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=None,
                        help="the agent's sampling temperature, for its passes and as an SMC proposal "
                             "(default: the one saved with the agent)")
    parser.add_argument("--greedy-first", action=argparse.BooleanOptionalAction, default=None,
                        help="make the agent's first pass greedy (default: as saved with the agent)")


def _add_config_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """The configuration argument and its ``--set`` overrides, shared by the subcommands that run one."""
    parser.add_argument("config", help=f"experiment name or .toml file (shipped: {', '.join(_shipped())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def _shipped() -> list[str]:
    from spiral_ppl import experiments

    return experiments.list_configs()


#: The brush options of ``infer`` and their defaults (``None`` in the parser, to tell a given one).
BRUSH_DEFAULTS = {"steps": 20, "canvas_size": 64, "grid_size": 32, "color": False}


def _add_brush_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="strokes per program (default: 20)")
    parser.add_argument("--canvas-size", type=int, default=None, help="canvas side in pixels (default: 64)")
    parser.add_argument("--grid-size", type=int, default=None, help="side of the grid of stroke points (default: 32)")
    parser.add_argument("--color", action="store_true", default=None, help="paint in colour (RGB components)")


def _brush_program(options: argparse.Namespace) -> sp.programs.PaintProgram:
    settings = {name: default if getattr(options, name) is None else getattr(options, name)
                for name, default in BRUSH_DEFAULTS.items()}
    brush = sp.renderers.Brush(canvas_size=settings["canvas_size"], grid_size=settings["grid_size"],
                               color=settings["color"])
    return sp.programs.PaintProgram(brush, steps=settings["steps"])


def _output_folder(path: str | Path) -> Path:
    """``--out`` as a folder to write into, refused if a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a folder to write the results into")
    return path


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
    agent = _load_agent(options.agent, options)
    out = _output_folder(options.out)
    # An agent brings its program; otherwise the brush options describe one.
    given = [f"--{name.replace('_', '-')}" for name in BRUSH_DEFAULTS if getattr(options, name) is not None]
    if agent is not None and given:
        raise ValueError(f"{' '.join(given)} describe a brush program, but --agent brings its own ({agent.prog!r}); "
                         "drop them, or drop --agent")
    prog = agent.prog if agent is not None else _brush_program(options)
    target = io.load_image(options.image, prog.channels, prog.image_size, invert=options.invert)
    engine = _build_engines([options.engine], agent)[options.engine]
    result = engine.infer(prog, target, sp.Budget(renders=options.renders), seed=options.seed)
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


def _comparison(config_name: str, overrides: list[str], engines: list[str], budgets: list[int] | None,
                targets: int, seeds: list[int], out: Path, agent) -> Path:
    """Run one head-to-head; with an agent, every engine inverts the agent's program."""
    from spiral_ppl import experiments

    config = experiments.load_config(config_name, overrides)
    prog = agent.prog if agent is not None else experiments.build_program(config)
    # Budgets default to one, ten and a hundred passes of the program's steps.
    budgets = budgets or [prog.steps, 10 * prog.steps, 100 * prog.steps]
    built = _build_engines(engines, agent)
    images = experiments.target_images(experiments.load_dataset(config, prog.image_size, "test"), targets)
    table = sp.compare(prog, images, engines=built, budgets=budgets, seeds=seeds)
    print(table.to_markdown())
    return table.write_report(out, prog, images, title=f"{config['name']}: {targets} held-out targets")


def _default_engines(agent) -> list[str]:
    """The search engines, plus SPIRAL alone and SPIRAL-guided SMC when there is an agent."""
    return SEARCH_ENGINES + (["spiral", "spiral-smc"] if agent is not None else [])


def command_compare(options: argparse.Namespace) -> int:
    agent = _load_agent(options.agent, options)
    engines = options.engines or _default_engines(agent)
    report = _comparison(options.config, options.set, engines, options.budgets, options.targets, options.seeds,
                         _output_folder(options.out), agent)
    print(f"wrote {report}")
    return 0


def command_demo(options: argparse.Namespace) -> int:
    """Search engines and the shipped pretrained agents on MNIST digits and MUJOCO SCENES."""
    out = _output_folder(options.out)
    sections = []
    for config_name, agent_name in (("mnist-recon", "mnist-recon-cpu"), ("scenes-recon", "scenes-recon-cpu")):
        agent = _load_agent(agent_name) if agent_name in sp.inference.Spiral.pretrained_names() else None
        engines = _default_engines(agent)
        report = _comparison(config_name, [], engines, options.budgets, options.targets, [options.seed],
                             out / config_name, agent)
        using = f" (SPIRAL agent `{agent_name}`: see its model card)" if agent is not None else ""
        sections.append(f"- [{config_name}]({report.relative_to(out)}){using}")
    (out / "report.md").write_text(
        "# spiral_ppl head to head\n\nThe same held-out targets and renderer-call budgets for every engine:\n\n"
        + "\n".join(sections) + "\n"
    )
    print(f"wrote {out / 'report.md'}")
    return 0


def command_train(options: argparse.Namespace) -> int:
    from spiral_ppl import experiments

    config = experiments.load_config(options.config, options.set)
    out = _output_folder(options.out or Path("runs") / config["name"])
    agent = experiments.train_experiment(config, out, device=options.device, minutes=options.minutes,
                                         workers=options.workers, ray_address=options.ray_address)
    print(f"trained {agent.learner.updates} updates in {agent.train_seconds / 60:.1f} minutes of training time; "
          f"run folder {out}")
    return 0


def command_pbt(options: argparse.Namespace) -> int:
    from spiral_ppl import experiments

    config = experiments.load_config(options.config, options.set)
    out = _output_folder(options.out or Path("runs") / f"{config['name']}-pbt")
    result = experiments.pbt_experiment(config, out, population=options.population, interval=options.interval,
                                        device=options.device, progress=True)
    print(f"best member: {result.best_hyperparameters}; run folder {out} (population.png, best.pt)")
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
    infer.add_argument("--agent", default=None,
                       help="SPIRAL agent for the spiral* engines: a pretrained name or a file")
    infer.add_argument("--renders", type=int, default=1000, help="renderer calls allowed (default: 1000)")
    infer.add_argument("--invert", action="store_true", help="the image has dark ink on a light background")
    infer.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    infer.add_argument("--out", default="inferred", help="output folder (default: inferred)")
    _add_decoding_options(infer)
    _add_brush_options(infer)
    infer.set_defaults(run=command_infer)

    compare = commands.add_parser("compare", help="head-to-head of engines on held-out targets of an experiment")
    _add_config_arguments(compare, "override a configuration value, e.g. --set program.steps=10")
    compare.add_argument("--agent", default=None,
                         help="SPIRAL agent (pretrained name or checkpoint); every engine then inverts its program")
    compare.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=None,
                         help="default: importance mcmc smc, plus spiral spiral-smc with --agent")
    compare.add_argument("--budgets", type=int, nargs="+", default=None,
                         help="renders per target (default: 1, 10 and 100 passes of the program's steps)")
    compare.add_argument("--targets", type=int, default=8, help="held-out targets (default: 8)")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0])
    compare.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    _add_decoding_options(compare)
    compare.set_defaults(run=command_compare)

    train = commands.add_parser("train", help="train a SPIRAL agent by a configuration's recipe (its phases)")
    _add_config_arguments(train, "override a configuration value, e.g. --set train.phases.0.updates=100 "
                                 "or --set a2c.lr=3e-4")
    train.add_argument("--out", default=None, help="run folder (default: runs/NAME); an existing one is resumed")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--minutes", type=float, default=None, help="stop after about this much training time")
    train.add_argument("--workers", type=int, default=0,
                       help="roll out on this many Ray workers (pip install 'spiral_ppl[distributed]'); 0: in-process")
    train.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. auto (default: start Ray here)")
    train.set_defaults(run=command_train)

    pbt = commands.add_parser("pbt", help="population-based training of an experiment's agent on Ray Tune")
    _add_config_arguments(pbt, "override a configuration value; the recipe's updates are each member's")
    pbt.add_argument("--population", type=int, default=4, help="members (default: 4; the paper: 12)")
    pbt.add_argument("--interval", type=int, default=100, help="updates between exploits (default: 100)")
    pbt.add_argument("--out", default=None, help="run folder (default: runs/NAME-pbt)")
    pbt.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    pbt.set_defaults(run=command_pbt)

    demo = commands.add_parser("demo", help="the main job: head-to-head on MNIST test digits and MUJOCO SCENES")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--targets", type=int, default=8, help="held-out targets per experiment (default: 8)")
    demo.add_argument("--budgets", type=int, nargs="+", default=None,
                      help="renders per target (default: 1, 10 and 100 passes of the program's steps)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        return options.run(options)
    except (ValueError, TypeError, OSError, ImportError) as error:  # the user's input or files, not a bug
        print(f"spiral-ppl {options.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
