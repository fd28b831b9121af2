"""The ``spiral-ppl`` command line.

::

    spiral-ppl render PROGRAM.json -o canvas.png      # a program file to a picture
    spiral-ppl infer IMAGE --engine importance        # a picture to a program file
    spiral-ppl infer IMAGE --program mygrammar:make   # ... with your own program (mygrammar.py here)
    spiral-ppl train mnist-recon --set train.steps=500 # train a SPIRAL agent (resumes a run folder)
    spiral-ppl train scenes-recon --workers 8          # ... with 8 rollout workers on Ray
    spiral-ppl pbt mnist-recon --population 4          # population-based training on Ray Tune
    spiral-ppl compare mnist-recon --budgets 100 1000 # engines head to head on an experiment
    spiral-ppl demo --out runs/demo                   # head to head on MNIST digits and MuJoCo scenes
    spiral-ppl doctor                                 # what this installation has, and how to fix the rest

Run ``spiral-ppl COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import torch

import spiral_ppl as sp
from spiral_ppl import checks, experiments, io
from spiral_ppl.inference.engine import Engine

#: Engines the command line can build by name. The ``spiral*`` ones need an agent (``--agent``).
ENGINES: dict[str, Callable[[Any], Engine]] = {
    "importance": lambda agent: sp.inference.Importance(),
    "mcmc": lambda agent: sp.inference.MCMC(),
    "mcmc-paper": lambda agent: _named(sp.inference.MCMC.paper_baseline(), "mcmc-paper"),
    "smc": lambda agent: sp.inference.SMC(),
    "smc-paper": lambda agent: _named(sp.inference.SMC.paper_baseline(), "smc-paper"),
    "spiral": lambda agent: agent,
    "spiral-smc": lambda agent: _named(agent.smc(), "spiral-smc"),
    "spiral-is": lambda agent: _named(sp.inference.Importance(agent.guide), "spiral-is"),
}
SEARCH_ENGINES = ["importance", "mcmc", "smc"]
#: Engines that run the agent's policy, and so accept the decoding options.
AGENT_ENGINES = ["spiral", "spiral-smc", "spiral-is"]

#: Seeds are what ``Engine.infer`` takes: an int in [0, 2**32).
MAX_SEED = 2**32 - 1
#: Renders and updates are counted in int64 tensors; a larger count is a typo that would overflow them.
MAX_COUNT = 2**63 - 1


# -- reading the command line: each option is checked as it is read ---------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a mistake as one line on stderr (exit code 2) that points
    at ``--help``, instead of the usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        argument, _, rest = message.partition(": ")
        if argument.startswith("argument ") and rest.startswith(argument.removeprefix("argument ") + " "):
            message = rest  # the option's own check (see _checked) names it already
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _checked(name: str, check: Callable[..., Any], kind: type = int, **limits: Any) -> Callable[[str], Any]:
    """An argparse ``type`` for the argument ``name``: its text read as ``kind``, then passed to
    ``check`` (a function of :mod:`spiral_ppl.checks`, or one below). Text that is no ``kind``
    goes to the check as it is, so "abc" gets the same message as 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = text
        try:
            return check(name, value, **limits)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _count(name: str, value: Any, *, hint: str = "") -> int:
    """A positive int that fits the int64 counters of renders and updates."""
    checks.positive_int(name, value, hint=hint)
    if value > MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**63 - 1, got {value}")
    return value


def _members(name: str, value: Any) -> int:
    """A population: at least two members, or there is nobody to exploit."""
    _count(name, value, hint="members of the population")
    if value < 2:
        raise ValueError(f"{name} must be at least 2 (members that compete), got {value}")
    return value


def _seed(name: str, value: Any) -> int:
    return checks.int_in_range(name, value, 0, MAX_SEED, hint="random seed")


def _device(name: str, value: str) -> str:
    """A torch device the command can use, refused here rather than deep inside a run."""
    try:
        device = torch.device(value)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be cpu, cuda or cuda:N (the N-th GPU), got {value!r}")
    if device.type == "cuda":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ValueError(f"{name} {value} asks for a GPU, but torch sees none here; use {name} cpu")
        if device.index is not None and device.index >= gpus:
            raise ValueError(f"{name} {value}: torch sees {gpus} GPU(s), cuda:0 to cuda:{gpus - 1}")
    return value


def _text(name: str, hint: str = "") -> Callable[[str], str]:
    """A file, folder or name argument: an empty one would quietly mean the current folder."""
    return _checked(name, checks.non_empty_text, str, hint=hint)


def _check_distinct(name: str, values: list | None) -> None:
    if values is not None and len(set(values)) != len(values):
        repeated = sorted({value for value in values if values.count(value) > 1}, key=str)
        raise ValueError(f"{name} repeats {', '.join(map(str, repeated))}; give each once")


# -- outputs: refused before any work is done if they cannot be written ---------------------------------------


def _check_writable(option: str, path: Path) -> None:
    """Refuse ``path`` if the nearest folder on the way to it that exists is a file or is not
    writable; nothing is made yet."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, so nothing can be written under it; "
                         "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write into {existing}; choose a folder you may write to")


def _output_folder(option: str, path: str | Path) -> Path:
    """The folder ``option`` names to write into, refused if a file is in the way or it cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder to write the results into")
    _check_writable(option, path)
    return path


def _image_output(option: str, text: str) -> Path:
    """The image file ``option`` names, refused if it is a folder, has no image extension or
    cannot be written."""
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise ValueError(f"{option} {text} is a folder; name the image to write, e.g. {path / 'canvas.png'}")
    if path.suffix.lower() not in io.IMAGE_FORMATS:
        raise ValueError(f"{option} {text}: cannot tell an image format from the name; end it with one of "
                         f"{sorted(io.IMAGE_FORMATS)}")
    _check_writable(option, path.parent)
    return path


@contextlib.contextmanager
def _writing(option: str, path: Path) -> Iterator[None]:
    """Name ``option`` when writing its results fails after all (a folder that cannot be made
    although its parent looked writable, a full disk)."""
    try:
        yield
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write there: {error.strerror or error}") from None


# -- agents, engines and programs --------------------------------------------------------------------------


def _named(engine: Engine, name: str) -> Engine:
    engine.name = name
    return engine


def _build_engines(names: list[str], agent) -> dict[str, Engine]:
    needs_agent = [name for name in names if name in AGENT_ENGINES]
    if needs_agent and agent is None:
        raise ValueError(f"engines {needs_agent} need a SPIRAL agent: pass --agent NAME_OR_PATH")
    return {name: ENGINES[name](agent) for name in names}


def _fewest_renders(engine: Engine, prog: sp.programs.Program) -> int:
    """The smallest budget (renders per target) ``engine`` can spend on ``prog``: one start per
    MCMC chain, one particle through every step for SMC, one sample for importance sampling, one
    pass for SPIRAL. Checked here so that the message speaks of the command's options, not of the
    library's arguments."""
    if isinstance(engine, sp.inference.MCMC):
        return engine.chains
    if isinstance(engine, sp.inference.SMC):
        return engine.fewest_renders(prog)
    if isinstance(engine, sp.inference.Importance):
        return engine.renders_per_sample()
    if isinstance(engine, sp.inference.Spiral):
        return engine.renders_per_pass
    return 1


def _check_budgets(option: str, budgets: list[int], engines: dict[str, Engine], prog: sp.programs.Program,
                   given: bool = True) -> None:
    """Refuse budgets some engine cannot spend; ``given``: the user wrote them (else they are the defaults)."""
    for name, engine in engines.items():
        fewest = _fewest_renders(engine, prog)
        if min(budgets) < fewest:
            which = f"{option} {min(budgets)}" if given else f"the default budgets {budgets} start at {min(budgets)}, which"
            raise ValueError(f"{which} is too few renders for {name}, which needs at least {fewest} per target on "
                             f"this program of {prog.steps} steps; give {option} {fewest} or more")


def _decoding_changes(options: argparse.Namespace, engines: list[str] | None) -> dict[str, Any]:
    """The decoding options given, refused where they would change nothing: without an agent, or
    when no engine that runs the agent's policy is asked for (``engines``; ``None``: the default ones,
    which include SPIRAL when there is an agent)."""
    changes = {name: value for name, value in (("temperature", options.temperature),
                                               ("greedy_first", options.greedy_first)) if value is not None}
    if not changes:
        return changes
    given = ["--temperature"] if options.temperature is not None else []
    given += [] if options.greedy_first is None else ["--greedy-first" if options.greedy_first else "--no-greedy-first"]
    if options.agent is None:
        raise ValueError(f"{' '.join(given)} set how a SPIRAL agent decodes, but no --agent is given; "
                         "pass --agent NAME_OR_PATH, or drop them")
    if engines is not None and not set(engines) & set(AGENT_ENGINES):
        raise ValueError(f"{' '.join(given)} set how a SPIRAL agent decodes, but no engine here runs it "
                         f"({', '.join(engines)}); add one of {AGENT_ENGINES}, or drop them")
    return changes


def _load_agent(name_or_path: str | None, changes: dict[str, Any] | None = None, reference: str | None = None):
    """A pretrained agent by name, or a checkpoint file, with the decoding ``changes``;
    ``None`` passes through. ``reference`` (``--program``) is the program a checkpoint's agent
    acts on, for a checkpoint that cannot rebuild its own."""
    if name_or_path is None:
        return None
    prog = None if reference is None else sp.programs.resolve_program(reference, argument="--program")
    agent = sp.inference.Spiral.named(name_or_path, prog, argument="--agent")
    return agent.with_decoding(**changes) if changes else agent


def _add_decoding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", default=None,
                        type=_checked("--temperature", checks.positive_number, float, hint="a sampling temperature"),
                        help="the agent's sampling temperature, for its passes and as an SMC proposal "
                             "(default: the one saved with the agent; needs --agent)")
    parser.add_argument("--greedy-first", action=argparse.BooleanOptionalAction, default=None,
                        help="make the agent's first pass greedy (default: as saved with the agent; needs --agent)")


def _add_config_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """The configuration argument and its ``--set`` overrides, shared by the subcommands that run one."""
    parser.add_argument("config", type=_text("config", hint="an experiment name or a .toml file"),
                        help=f"experiment name or .toml file (shipped: {', '.join(experiments.list_configs())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def _add_program_option(parser: argparse.ArgumentParser, replaces: str) -> None:
    parser.add_argument("--program", default=None, metavar="MODULE:FACTORY",
                        type=_text("--program", hint="a program reference module:factory"),
                        help="your own program: MODULE:FACTORY calls FACTORY(...) of MODULE (searched in the current "
                             "directory, then PYTHONPATH), which returns a spiral_ppl Program or a Pyro model; "
                             f"it replaces {replaces}")


#: The brush options of ``infer`` and their defaults (``None`` in the parser, to tell a given one).
BRUSH_DEFAULTS = {"steps": 20, "canvas_size": 64, "grid_size": 32, "color": False}


def _add_brush_options(parser: argparse.ArgumentParser) -> None:
    size = f"an int in [2, {experiments.MAX_IMAGE_SIZE}]"
    parser.add_argument("--steps", default=None, type=_checked("--steps", _count, hint="strokes per program"),
                        help="strokes per program (default: 20)")
    parser.add_argument("--canvas-size", default=None,
                        type=_checked("--canvas-size", checks.int_in_range, low=2, high=experiments.MAX_IMAGE_SIZE),
                        help=f"canvas side in pixels, {size} (default: 64)")
    parser.add_argument("--grid-size", default=None,
                        type=_checked("--grid-size", checks.int_in_range, low=2, high=experiments.MAX_IMAGE_SIZE),
                        help="side of the grid of stroke points, at most the canvas side (default: 32)")
    parser.add_argument("--color", action="store_true", default=None, help="paint in colour (RGB components)")


def _brush_program(options: argparse.Namespace) -> sp.programs.PaintProgram:
    settings = {name: default if getattr(options, name) is None else getattr(options, name)
                for name, default in BRUSH_DEFAULTS.items()}
    if settings["grid_size"] > settings["canvas_size"]:
        raise ValueError(f"--grid-size {settings['grid_size']} must be at most the canvas side (--canvas-size "
                         f"{settings['canvas_size']}): the stroke points lie on the canvas")
    brush = sp.renderers.Brush(canvas_size=settings["canvas_size"], grid_size=settings["grid_size"],
                               color=settings["color"])
    return sp.programs.PaintProgram(brush, steps=settings["steps"])


def _check_target(path: str, target: torch.Tensor, invert: bool) -> None:
    """Refuse a picture with nothing in it: a flat image is almost always dark ink read on a dark
    background (a missing --invert, or ink on a transparent background)."""
    if float(target.amax() - target.amin()) == 0:
        hint = "drop --invert if its ink is light on dark" if invert else "pass --invert if its ink is dark on light"
        raise ValueError(f"image {path} is one flat colour once read (every pixel {float(target.flatten()[0]):.2f}); "
                         f"there is nothing to infer: {hint}")


# -- the commands ------------------------------------------------------------------------------------------


def command_render(options: argparse.Namespace) -> int:
    output = _image_output("-o/--output", options.output)
    # What draws the file's program: its renderer, or the program its reference makes.
    renderer, actions = io.load_program(options.program)
    side = renderer.image_size * options.scale
    if options.scale != 1 and not hasattr(renderer, "with_canvas_size"):
        raise ValueError(f"--scale: a {type(renderer).__name__} program cannot re-render at another resolution; "
                         "drop --scale")
    if side > experiments.MAX_IMAGE_SIZE:
        where = f"--scale {options.scale} times its {renderer.image_size}-pixel canvas" if options.scale != 1 \
            else f"the program's renderer ({options.program})"
        raise ValueError(f"{where} asks for a {side}-pixel canvas; the largest spiral-ppl renders is "
                         f"{experiments.MAX_IMAGE_SIZE}")
    if options.scale != 1:
        renderer = renderer.with_canvas_size(side)
    with _writing("-o/--output", output):
        io.save_image(output, renderer.render(actions)[0])
    print(f"wrote {output} ({renderer.image_size}x{renderer.image_size}, {next(iter(actions.values())).shape[1]} steps)")
    return 0


def command_infer(options: argparse.Namespace) -> int:
    out = _output_folder("--out", options.out)
    # The program: the agent's, or --program's, or the brush the brush options describe.
    given = [f"--{name.replace('_', '-')}" for name in BRUSH_DEFAULTS if getattr(options, name) is not None]
    if options.program is not None and given:
        raise ValueError(f"{' '.join(given)} describe a brush program, but --program {options.program} gives your "
                         "own; drop them (your factory sets its program's size and steps), or drop --program")
    agent = _load_agent(options.agent, _decoding_changes(options, [options.engine]), options.program)
    if agent is not None and given:
        raise ValueError(f"{' '.join(given)} describe a brush program, but --agent brings its own ({agent.prog!r}); "
                         "drop them, or drop --agent")
    if agent is not None:
        prog = agent.prog
    elif options.program is not None:
        prog = sp.programs.resolve_program(options.program, argument="--program")
    else:
        prog = _brush_program(options)
    io.program_header(prog)  # a program that no file can hold is refused before the work, not after
    engines = _build_engines([options.engine], agent)
    _check_budgets("--renders", [options.renders], engines, prog)
    target = io.load_image(options.image, prog.channels, prog.image_size, invert=options.invert)
    _check_target(options.image, target, options.invert)
    engine = engines[options.engine]
    result = engine.infer(prog, target, sp.Budget(renders=options.renders), seed=options.seed)
    summary = {
        "engine": result.engine,
        "l2": float(result.l2[0]),
        "renders": int(result.renders[0]),
        "seconds": result.seconds,
        "ess": None if result.ess is None else float(result.ess[0]),
        "log_evidence": None if result.log_evidence is None else float(result.log_evidence[0]),
    }
    with _writing("--out", out):
        io.save_image(out / "reconstruction.png", result.images[0])
        io.save_program(out / "program.json", prog, {k: v[0] for k, v in result.actions.items()}, result=summary)
    print(json.dumps(summary))
    print(f"wrote {out / 'reconstruction.png'} and {out / 'program.json'}")
    return 0


#: The tables of a configuration that a head-to-head reads: its data and its program.
COMPARE_TABLES = ("data", "program")


def _check_compare_overrides(overrides: list[str], agent) -> None:
    """Refuse ``--set`` overrides that a head-to-head would ignore: of the training tables, or of
    ``[program]`` when the agent brings its own program."""
    for override in overrides:
        table = override.partition("=")[0].split(".")[0].strip()
        if table == "program" and agent is not None:
            raise ValueError(f"--set {override}: with --agent every engine inverts the agent's own program, so "
                             "[program] settings would be ignored; drop it, or drop --agent")
        if table not in COMPARE_TABLES:
            raise ValueError(f"--set {override}: a head-to-head reads only the {list(COMPARE_TABLES)} tables of a "
                             "configuration, so this would be ignored; drop it (training settings are for "
                             "`spiral-ppl train`)")


def _comparison(config_name: str, overrides: list[str], engines: list[str], budgets: list[int] | None,
                targets: int, seeds: list[int], out: Path, agent, program: str | None = None) -> Path:
    """Run one head-to-head; with an agent, every engine inverts the agent's program; else the
    configuration's, or ``program`` (a reference ``module:factory``) in its place."""
    config = experiments.load_config(config_name, overrides, program=None if agent is not None else program)
    _check_compare_overrides(overrides, agent)
    prog = agent.prog if agent is not None else experiments.build_program(config)
    # Budgets default to one, ten and a hundred passes of the program's steps.
    given = budgets is not None
    budgets = budgets or [prog.steps, 10 * prog.steps, 100 * prog.steps]
    built = _build_engines(engines, agent)
    _check_budgets("--budgets", budgets, built, prog, given)
    dataset = experiments.load_dataset(config, prog.image_size, "test")
    if targets > len(dataset):
        raise ValueError(f"--targets {targets} is more than the {len(dataset)} held-out images of {config['name']}; "
                         f"give --targets {len(dataset)} or fewer")
    images = experiments.target_images(dataset, targets)
    if images.shape[1] != prog.channels:
        painter = "--agent" if agent is not None else f"--program {program}" if program is not None else \
            f"the [program] of {config['name']}"
        raise ValueError(f"{painter} paints {prog.channels}-channel images, but the data of {config['name']} has "
                         f"{images.shape[1]}-channel ones; compare on a configuration of data with "
                         f"{prog.channels}-channel images")
    table = sp.compare(prog, images, engines=built, budgets=budgets, seeds=seeds)
    print(table.to_markdown())
    with _writing("--out", out):
        return table.write_report(out, prog, images, title=f"{config['name']}: {targets} held-out targets")


def _default_engines(agent) -> list[str]:
    """The search engines, plus SPIRAL alone and SPIRAL-guided SMC when there is an agent."""
    return SEARCH_ENGINES + (["spiral", "spiral-smc"] if agent is not None else [])


def command_compare(options: argparse.Namespace) -> int:
    out = _output_folder("--out", options.out)
    for name, values in (("--engines", options.engines), ("--budgets", options.budgets), ("--seeds", options.seeds)):
        _check_distinct(name, values)
    agent = _load_agent(options.agent, _decoding_changes(options, options.engines), options.program)
    engines = options.engines or _default_engines(agent)
    report = _comparison(options.config, options.set, engines, options.budgets, options.targets, options.seeds,
                         out, agent, options.program)
    print(f"wrote {report}")
    return 0


def command_demo(options: argparse.Namespace) -> int:
    """Search engines and the shipped pretrained agents on MNIST digits and MUJOCO SCENES."""
    out = _output_folder("--out", options.out)
    _check_distinct("--budgets", options.budgets)
    # The MNIST digits are the sample shipped in the package unless the full test set is asked
    # for, so that the main job runs offline.
    overrides = {"mnist-recon": [f"data.test_split={options.mnist}"], "scenes-recon": []}
    sections = []
    for config_name, agent_name in (("mnist-recon", "mnist-recon-cpu"), ("scenes-recon", "scenes-recon-cpu")):
        agent = _load_agent(agent_name) if agent_name in sp.inference.Spiral.pretrained_names() else None
        engines = _default_engines(agent)
        report = _comparison(config_name, overrides[config_name], engines, options.budgets, options.targets,
                             [options.seed], out / config_name, agent)
        using = f" (SPIRAL agent `{agent_name}`: see its model card)" if agent is not None else ""
        sections.append(f"- [{config_name}]({report.relative_to(out)}){using}")
    with _writing("--out", out):
        (out / "report.md").write_text(
            "# spiral_ppl head to head\n\nThe same held-out targets and renderer-call budgets for every engine:\n\n"
            + "\n".join(sections) + "\n"
        )
    print(f"wrote {out / 'report.md'}")
    return 0


def command_doctor(options: argparse.Namespace) -> int:
    """Print what this installation has; exit 1 when a part the main job needs is missing."""
    from spiral_ppl import doctor

    parts = doctor.diagnose(render_scene=not options.quick)
    print(doctor.report(parts))
    missing = [part.name for part in parts if part.required and not part.found]
    if missing:
        print(f"missing for the main job: {', '.join(missing)} (the fixes are above)")
    return 1 if missing else 0


def command_train(options: argparse.Namespace) -> int:
    if options.ray_address is not None and not options.workers:
        raise ValueError(f"--ray-address {options.ray_address} is for Ray rollout workers, but --workers is 0 "
                         "(roll out in-process); give --workers N, or drop --ray-address")
    config = experiments.load_config(options.config, options.set, program=options.program)
    out = _output_folder("--out", options.out or Path("runs") / config["name"])
    agent = experiments.train_experiment(config, out, device=options.device, minutes=options.minutes,
                                         workers=options.workers, ray_address=options.ray_address, seed=options.seed)
    print(f"trained {agent.learner.updates} updates in {agent.train_seconds / 60:.1f} minutes of training time; "
          f"run folder {out}")
    return 0


def command_pbt(options: argparse.Namespace) -> int:
    config = experiments.load_config(options.config, options.set, program=options.program)
    out = _output_folder("--out", options.out or Path("runs") / f"{config['name']}-pbt")
    result = experiments.pbt_experiment(config, out, population=options.population, interval=options.interval,
                                        device=options.device, progress=True)
    print(f"best member: {result.best_hyperparameters}; run folder {out} (population.png, best.pt)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spiral-ppl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    budget_help = "renders per target (default: 1, 10 and 100 passes of the program's steps)"
    device_help = "cpu, cuda or cuda:N (default: cuda when available)"

    render = commands.add_parser("render", help="render a program file (JSON) to a PNG")
    render.add_argument("program", type=_text("program", hint="a program file (JSON)"),
                        help="program file: {'renderer': {...}, 'steps': [{component: value}, ...]}, or, for your "
                             "own program, {'program': 'module:factory', 'options': {...}, 'steps': [...]}")
    render.add_argument("-o", "--output", default="canvas.png", type=_text("-o/--output", hint="an image file"),
                        help=f"image to write, in the format its extension names: {', '.join(sorted(io.IMAGE_FORMATS))} "
                             "(default: canvas.png)")
    render.add_argument("--scale", type=_checked("--scale", _count, hint="times the program's resolution"), default=1,
                        help="re-render at this many times the resolution")
    render.set_defaults(run=command_render)

    infer = commands.add_parser("infer", help="infer a program for an image and write it with its reconstruction")
    infer.add_argument("image", type=_text("image", hint="an image file"),
                       help="image file (PNG, JPEG, ...); light ink on a dark background unless --invert")
    infer.add_argument("--engine", choices=sorted(ENGINES), default="importance", help="inference engine")
    infer.add_argument("--agent", default=None, type=_text("--agent", hint="a pretrained name or a checkpoint file"),
                       help="SPIRAL agent for the spiral* engines: a pretrained name or a file")
    infer.add_argument("--renders", type=_checked("--renders", _count, hint="renderer calls per target"), default=1000,
                       help="renderer calls allowed (default: 1000)")
    infer.add_argument("--invert", action="store_true", help="the image has dark ink on a light background")
    infer.add_argument("--seed", type=_checked("--seed", _seed), default=0, help="random seed (default: 0)")
    infer.add_argument("--out", default="inferred", type=_text("--out", hint="an output folder"),
                       help="output folder (default: inferred)")
    _add_decoding_options(infer)
    _add_program_option(infer, "the brush options; with --agent CHECKPOINT, the program its agent acts on")
    _add_brush_options(infer)
    infer.set_defaults(run=command_infer)

    compare = commands.add_parser("compare", help="head-to-head of engines on held-out targets of an experiment")
    _add_config_arguments(compare, "override a [data] or [program] value, e.g. --set program.steps=10")
    compare.add_argument("--agent", default=None, type=_text("--agent", hint="a pretrained name or a checkpoint file"),
                         help="SPIRAL agent (pretrained name or checkpoint); every engine then inverts its program")
    compare.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=None,
                         help="default: importance mcmc smc (the strongest search settings; mcmc-paper and smc-paper "
                              "are the paper's baselines), plus spiral spiral-smc with --agent")
    compare.add_argument("--budgets", type=_checked("--budgets", _count, hint="renders per target"), nargs="+",
                         default=None, help=budget_help)
    compare.add_argument("--targets", type=_checked("--targets", _count, hint="held-out images"), default=8,
                         help="held-out targets (default: 8)")
    compare.add_argument("--seeds", type=_checked("--seeds", _seed), nargs="+", default=[0],
                         help="random seeds, one run of every engine each (default: 0)")
    compare.add_argument("--out", default="runs/compare", type=_text("--out", hint="an output folder"),
                         help="output folder (default: runs/compare)")
    _add_decoding_options(compare)
    _add_program_option(compare, "the configuration's [program] table (--set program.KEY=VALUE gives FACTORY a "
                                 "keyword); with --agent CHECKPOINT, the program its agent acts on")
    compare.set_defaults(run=command_compare)

    train = commands.add_parser("train", help="train a SPIRAL agent by a configuration's recipe (its phases)")
    _add_config_arguments(train, "override a configuration value, e.g. --set train.phases.0.updates=100 "
                                 "or --set a2c.lr=3e-4")
    train.add_argument("--out", default=None, type=_text("--out", hint="a run folder"),
                       help="run folder (default: runs/NAME); an existing one is resumed")
    train.add_argument("--device", default=None, type=_checked("--device", _device, str), help=device_help)
    train.add_argument("--minutes", type=_checked("--minutes", checks.positive_number, float), default=None,
                       help="stop after about this much training time")
    train.add_argument("--seed", type=_checked("--seed", _seed), default=0,
                       help="random seed of a new run's weights and draws (default: 0); a resumed run continues its own")
    train.add_argument("--workers", type=_checked("--workers", checks.non_negative_int, hint="0: in-process"),
                       default=0,
                       help="roll out on this many Ray workers (pip install 'spiral_ppl[distributed]'); 0: in-process")
    train.add_argument("--ray-address", default=None, type=_text("--ray-address", hint="e.g. auto"),
                       help="Ray cluster to join, e.g. auto (default: start Ray here; needs --workers)")
    _add_program_option(train, "the configuration's [program] table (--set program.KEY=VALUE gives FACTORY a "
                               "keyword)")
    train.set_defaults(run=command_train)

    pbt = commands.add_parser("pbt", help="population-based training of an experiment's agent on Ray Tune")
    _add_config_arguments(pbt, "override a configuration value; the recipe's updates are each member's")
    pbt.add_argument("--population", type=_checked("--population", _members), default=4,
                     help="members, at least 2 (default: 4; the paper: 12)")
    pbt.add_argument("--interval", type=_checked("--interval", _count, hint="updates between exploits"), default=100,
                     help="updates between exploits (default: 100)")
    pbt.add_argument("--out", default=None, type=_text("--out", hint="a run folder"),
                     help="run folder (default: runs/NAME-pbt)")
    pbt.add_argument("--device", default=None, type=_checked("--device", _device, str), help=device_help)
    _add_program_option(pbt, "the configuration's [program] table (--set program.KEY=VALUE gives FACTORY a keyword)")
    pbt.set_defaults(run=command_pbt)

    demo = commands.add_parser("demo", help="the main job: head-to-head on MNIST test digits and MUJOCO SCENES")
    demo.add_argument("--out", default="runs/demo", type=_text("--out", hint="an output folder"),
                      help="output folder (default: runs/demo)")
    demo.add_argument("--targets", type=_checked("--targets", _count, hint="held-out images"), default=8,
                      help="held-out targets per experiment (default: 8)")
    demo.add_argument("--budgets", type=_checked("--budgets", _count, hint="renders per target"), nargs="+",
                      default=None, help=budget_help)
    demo.add_argument("--seed", type=_checked("--seed", _seed), default=0, help="random seed (default: 0)")
    demo.add_argument("--mnist", choices=("test-sample", "test"), default="test-sample",
                      help="MNIST digits to invert: test-sample, the first 500 test digits shipped in the package "
                           "(default; nothing to download), or test, the full test set (read or downloaded)")
    demo.set_defaults(run=command_demo)

    doctor = commands.add_parser("doctor", help="what this installation has (versions, EGL, libmypaint, Ray, GPU, "
                                                "data), and the command that fixes each missing part")
    doctor.add_argument("--quick", action="store_true", help="skip MuJoCo's test render (a few seconds)")
    doctor.set_defaults(run=command_doctor)
    return parser


def _version() -> str:
    import pyro

    return f"spiral-ppl {sp.__version__} (torch {torch.__version__}, pyro-ppl {pyro.__version__}, python " \
           f"{sys.version.split()[0]})"


def main(argv: list[str] | None = None) -> int:
    try:
        options = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0), or a mistake the parser has reported (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return options.run(options)
    except (ValueError, TypeError, OSError, ImportError) as error:  # the user's input or files, not a bug
        print(f"spiral-ppl {options.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
