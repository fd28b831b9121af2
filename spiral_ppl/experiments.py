"""The paper's experiments and the shipped agents' recipes as configuration files, and what
turns one into a program, data and a training run.

A configuration is a TOML file (see ``spiral_ppl/configs/``) with these tables:

- ``[data]``: the dataset and its train / held-out test split;
- ``[program]``: the renderer and its settings, and the number of steps; or, for a program of
  your own, ``factory = "module:factory"`` and the factory's keyword arguments as the other keys
  (see :func:`build_program`);
- ``[agent]``: ``conditional`` and ``blind`` (the :class:`~spiral_ppl.inference.Spiral` switches);
- ``[policy]``, ``[a2c]``, ``[critic]``, ``[reward]``, ``[train]``: the sections of
  :class:`~spiral_ppl.inference.SpiralConfig`, one to one; ``[[train.phases]]`` is the recipe
  (:mod:`spiral_ppl.inference.spiral.recipe`).

Any value can be overridden with ``key=value`` strings, the key a dotted path into the tables
(``a2c.lr=3e-4``, ``train.phases.0.updates=100``); values are read as TOML (``1e-4``,
``true``, ``"brush"``), and bare words as strings.

Example::

    >>> config = load_config("mnist-recon", ["train.phases.0.updates=100", "program.steps=5"])
    >>> config["train"]["phases"][0]["updates"], config["program"]["steps"], config["reward"]["kind"]
    (100, 5, 'critic')
"""

from __future__ import annotations

import copy
import csv
import json
import time
import tomllib
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset, Subset

import spiral_ppl as sp
from spiral_ppl import checks

SECTIONS = ("data", "program", "agent", "policy", "a2c", "critic", "reward", "train")
#: The largest image side a configuration may ask for (the MuJoCo renderer's limit too): a larger
#: one is a typo that would try to allocate gigabytes for one canvas.
MAX_IMAGE_SIZE = 4096


def list_configs() -> list[str]:
    """Names of the configurations shipped with the package."""
    folder = resources.files("spiral_ppl") / "configs"
    return sorted(entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_config(name_or_path: str | Path, overrides: Iterable[str] = (), *,
                program: str | None = None) -> dict[str, Any]:
    """Read a shipped configuration by name, or a TOML file by path, and apply ``overrides``.

    :param program: a program reference ``"module:factory"`` that replaces the ``[program]``
        table (as ``[program] factory = ...``) before the overrides, which may then set the
        factory's keyword arguments (``program.steps=5``).
    """
    if not str(name_or_path).strip():
        raise ValueError(f"a configuration is a shipped experiment name {list_configs()} or a .toml file, got ''")
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"no configuration file at {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a configuration: it is not text (an image?); a configuration is a "
                             ".toml file, like those in spiral_ppl/configs") from None
    elif str(name_or_path) in list_configs():
        text = (resources.files("spiral_ppl") / "configs" / f"{name_or_path}.toml").read_text()
    else:
        raise ValueError(f"unknown configuration {str(name_or_path)!r}; shipped ones: {list_configs()}, or a .toml path")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{name_or_path}: not valid TOML: {error}") from None
    unknown = sorted(set(config) - set(SECTIONS) - {"name"})
    if unknown:
        raise ValueError(f"{name_or_path}: unknown tables {unknown}; a configuration has {list(SECTIONS)}")
    for section in SECTIONS:
        if not isinstance(config.setdefault(section, {}), dict):
            raise ValueError(f"{name_or_path}: {section} must be a table ([{section}] followed by its settings), "
                             f"got {config[section]!r}")
    if not isinstance(config.setdefault("name", path.stem), str):
        raise ValueError(f"{name_or_path}: name must be a string, got {config['name']!r}")
    if program is not None:
        config["program"] = {"factory": program}
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: dict[str, Any], override: str) -> None:
    """Set ``table.key=value`` (or a deeper dotted path, list items by index) in ``config`` (in place);
    the value is parsed as TOML."""
    key, separator, raw = override.partition("=")
    path = key.strip().split(".")
    if not separator or len(path) < 2 or not all(path):
        raise ValueError(f"an override is table.key=value (e.g. a2c.lr=3e-4), got {override!r}")
    if path[0] not in SECTIONS:
        raise ValueError(f"override {override!r}: unknown table {path[0]!r}; tables are {list(SECTIONS)}")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    node: Any = config
    for part in path[:-1]:
        node = _child(node, part, override)
    if isinstance(node, list):
        node[_index(node, path[-1], override)] = value
    elif isinstance(node, dict):
        node[path[-1]] = value
    else:
        raise ValueError(f"override {override!r}: {path[-2]!r} is a value, not a table or a list")


def _child(node: Any, part: str, override: str) -> Any:
    """The item ``part`` of a table (made if missing) or of a list, on the way down an override's path."""
    if isinstance(node, list):
        return node[_index(node, part, override)]
    if not isinstance(node, dict):
        raise ValueError(f"override {override!r}: {part!r} is inside a value, not a table or a list")
    return node.setdefault(part, {})


def _index(items: list, part: str, override: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ValueError(f"override {override!r}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def build_program(config: dict[str, Any]) -> sp.programs.Program:
    """The program a configuration describes (``[program]``).

    A built-in program names its ``renderer`` (its settings are the other keys) and ``steps``.
    A program of your own names its ``factory``, a reference ``"module:factory"``, and the other
    keys are the factory's keyword arguments (:func:`~spiral_ppl.programs.resolve_program`)::

        [program]
        factory = "mygrammar:make_program"   # mygrammar.py in the current directory
        steps = 5                            # make_program(steps=5)
    """
    settings = copy.deepcopy(config["program"])
    if "factory" in settings:
        factory = settings.pop("factory")
        if "renderer" in settings:
            raise ValueError(f"[program] names both a renderer ({settings['renderer']!r}) and a factory ({factory!r}); "
                             "keep one: the factory makes the whole program")
        return sp.programs.resolve_program(factory, settings, argument="[program] factory")
    renderer = settings.pop("renderer", "brush")
    steps = settings.pop("steps", 20)
    for key in ("canvas_size", "image_size"):
        size = settings.get(key)
        if isinstance(size, int) and size > MAX_IMAGE_SIZE:
            raise ValueError(f"[program] {key} must be at most {MAX_IMAGE_SIZE}, got {size}")
    if renderer in ("brush", "mypaint"):
        kind = sp.renderers.Brush if renderer == "brush" else getattr(sp.renderers, "MyPaint", None)
        if kind is None:
            raise ValueError("renderer 'mypaint' is not available in this installation")
        return _program(sp.programs.PaintProgram, _construct(kind, settings, "program"), steps)
    if renderer == "mujoco":
        return _program(sp.programs.SceneProgram, _construct(sp.renderers.MujocoScene, settings, "program"), steps)
    raise ValueError(f"[program] renderer must be 'brush', 'mypaint' or 'mujoco', got {renderer!r}")


def _construct(kind, settings: dict[str, Any], table: str):
    """``kind(**settings)``; its messages name its arguments, which are the keys of ``[table]``."""
    try:
        return kind(**settings)
    except TypeError as error:
        raise ValueError(f"[{table}] settings do not fit {kind.__name__}: {error}") from None
    except ValueError as error:
        raise ValueError(f"[{table}] {error}") from None


def _program(kind, renderer, steps: Any) -> sp.programs.Program:
    try:
        return kind(renderer, steps=steps)
    except ValueError as error:
        raise ValueError(f"[program] {error}") from None


def load_datasets(config: dict[str, Any], image_size: int) -> tuple[Dataset, Dataset]:
    """The training and held-out test datasets of a configuration (``[data]``)."""
    return load_dataset(config, image_size, "train"), load_dataset(config, image_size, "test")


def load_dataset(config: dict[str, Any], image_size: int, part: str) -> Dataset:
    """The ``part`` (``"train"`` or ``"test"``) of a configuration's dataset (``[data]``);
    ``test_stride = N`` (or ``train_stride``) keeps every N-th item, so that the first
    held-out targets of a dataset stored class by class (Omniglot) span its classes."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    dataset = _dataset(config, image_size, part)
    stride = checks.positive_int(f"[data] {part}_stride", config["data"].get(f"{part}_stride", 1),
                                 hint="keep every N-th item")
    return dataset if stride == 1 else Subset(dataset, range(0, len(dataset), stride))


def _dataset(config: dict[str, Any], image_size: int, part: str) -> Dataset:
    data = dict(config["data"])
    name = data.pop("dataset", None)
    root = data.pop("root", None)
    if name == "mnist":
        return sp.data.MNIST(root, split=data.get(f"{part}_split", part), image_size=image_size)
    if name == "omniglot":
        default = "background" if part == "train" else "evaluation"
        characters = sp.data.Omniglot(root, split=data.get(f"{part}_split", default), image_size=image_size)
        if part == "train" and "train_exclude" in data:
            return _without_characters_of(characters, data["train_exclude"])
        return characters
    if name == "celeba":
        faces = sp.data.CelebA(root, image_size=image_size)
        held_out = max(1, int(len(faces) * data.get("test_fraction", 0.05)))
        if held_out >= len(faces):
            raise ValueError(f"CelebA in {faces.root} has {len(faces)} images: too few to hold {held_out} out")
        split = len(faces) - held_out
        return Subset(faces, range(split) if part == "train" else range(split, len(faces)))
    if name == "mujoco_scenes":
        size, seed = (50_000, 0) if part == "train" else (1000, 1)
        # The ground-truth programs are as long as the program the agent writes, so that imitation
        # learns every step of them.
        steps = config["program"].get("steps", 20)
        return sp.data.MujocoScenes(root, size=data.get(f"{part}_size", size), seed=data.get(f"{part}_seed", seed),
                                    image_size=image_size, order=data.get("order", "generated"), steps=steps,
                                    max_objects=data.get("max_objects", min(5, steps)))
    raise ValueError(f"[data] dataset must be 'mnist', 'omniglot', 'celeba' or 'mujoco_scenes', got {name!r}")


def _without_characters_of(characters, split: Any) -> Dataset:
    """Omniglot drawings less those of the characters in ``split`` (``[data] train_exclude``), so
    that a split whose people's strokes score an agent's parsing stays out of its training."""
    from spiral_ppl.data.omniglot import ZIP_SPLITS, character_ids_in

    checks.choice("[data] train_exclude", split, tuple(s for s in ZIP_SPLITS if s != characters.split))
    excluded = character_ids_in(split, characters.root)
    kept = [index for index, character in enumerate(characters.character_ids.tolist()) if character not in excluded]
    return Subset(characters, kept)


def target_images(dataset: Dataset, count: int, start: int = 0) -> torch.Tensor:
    """``count`` images ``(N, C, H, W)`` from a dataset of images or ``(image, ...)`` tuples."""
    if count < 1 or start < 0 or start + count > len(dataset):
        raise ValueError(f"cannot take {count} images from index {start} of a dataset of {len(dataset)}")
    if hasattr(dataset, "images"):
        return dataset.images(range(start, start + count))
    items = [dataset[index] for index in range(start, start + count)]
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items])


def spiral_config(config: dict[str, Any]):
    """The :class:`~spiral_ppl.inference.SpiralConfig` of a configuration's agent tables."""
    from spiral_ppl.inference.spiral import SpiralConfig
    from spiral_ppl.inference.spiral.config import SECTIONS as AGENT_SECTIONS

    phases = config.get("train", {}).get("phases", [])
    if not isinstance(phases, list) or not all(isinstance(phase, dict) for phase in phases):
        raise ValueError(f"{config.get('name', 'configuration')}: train.phases must be a list of tables "
                         f"([[train.phases]] with kind and updates), got {phases!r}")
    try:
        return SpiralConfig.from_dict({name: config[name] for name in AGENT_SECTIONS})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config.get('name', 'configuration')}: {error}") from None


def build_agent(config: dict[str, Any], prog: sp.programs.Program, device: str | None = None):
    """A new SPIRAL agent as the configuration describes it (``[agent]`` and the agent's tables),
    with the weights of the agent ``[agent] start_from`` names when it names one."""
    from spiral_ppl.inference.spiral import Spiral

    _check_agent_settings(config)
    switches = {key: value for key, value in config["agent"].items() if key != "start_from"}
    agent = Spiral(prog, **switches, device=device, config=spiral_config(config))
    if "start_from" in config["agent"]:
        _copy_weights(Spiral.named(config["agent"]["start_from"], device="cpu", argument="[agent] start_from"), agent)
    return agent


def _check_agent_settings(config: dict[str, Any]) -> None:
    """``[agent]``: its two switches and the agent a run starts from, and nothing else."""
    unknown = sorted(set(config["agent"]) - {"conditional", "blind", "start_from"})
    if unknown:
        raise ValueError(f"[agent] unknown settings {unknown}; it has conditional, blind and start_from (the reward "
                         "is [reward] kind)")
    for key, value in config["agent"].items():
        if key == "start_from":
            checks.non_empty_text("[agent] start_from", value, hint="a pretrained agent's name or an agent file")
        else:
            checks.switch(f"[agent] {key}", value)


def _copy_weights(source, agent) -> None:
    """Give a new run's ``agent`` the policy (and critic, where both have one of the same shape)
    and the decoding of ``source``, an agent for programs with the same actions and images; its
    optimisers, update count and training time start afresh."""
    from spiral_ppl.inference.spiral.checkpoints import program_differences

    differ = program_differences(source.prog, agent.prog, ("action_space", "channels", "image_size"))
    if differ:
        raise ValueError(f"[agent] start_from: that agent acts on {source.prog!r}, which differs from this "
                         f"configuration's program in {differ}; start from an agent for the same actions and images")
    if (source.conditional, source.blind) != (agent.conditional, agent.blind):
        raise ValueError(f"[agent] start_from: that agent has conditional={source.conditional}, "
                         f"blind={source.blind}; this configuration asks for conditional={agent.conditional}, "
                         f"blind={agent.blind}")
    try:
        agent.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as error:
        raise ValueError(f"[agent] start_from: that agent's policy network has other shapes than [policy] "
                         f"describes ({str(error)[:200]}); copy its [policy] settings") from None
    if agent.critic is not None and source.critic is not None:
        try:
            agent.critic.load_state_dict(source.critic.state_dict())
        except RuntimeError:
            # A critic of another shape is trained afresh, as a reward the source never had would be.
            warnings.warn("[agent] start_from: that agent's critic has other shapes than [critic] describes; "
                          "this run's critic starts afresh", stacklevel=2)
    agent.decoding = source.decoding


def train_experiment(
    config: dict[str, Any],
    out: str | Path,
    *,
    device: str | None = None,
    minutes: float | None = None,
    progress: bool | None = None,
    workers: int = 0,
    ray_address: str | None = None,
    seed: int | None = None,
):
    """Carry out the configuration's recipe (``[[train.phases]]``) into the run folder ``out``,
    resuming from its checkpoint when there is one.

    The folder receives ``config.json`` (the resolved configuration), ``train.csv``,
    ``imitation.csv`` and ``eval.csv`` logs, sample grids, ``checkpoint.pt`` (written atomically;
    a rerun resumes exactly where it stopped, also in the middle of a phase), ``curve.png``
    (held-out metric against training time) and ``agent.pt`` (final weights). ``minutes`` stops
    early, after the chunk of updates that crosses it. ``workers`` > 0 rolls A2C's episodes out
    on that many Ray workers (:class:`~spiral_ppl.inference.spiral.RayEpisodes`, on the cluster
    at ``ray_address`` when given). ``seed`` seeds a new run's weights and random draws (``None``:
    they come from torch's global stream as it stands); a resumed run continues the random
    streams its checkpoint saved.
    """
    from spiral_ppl.inference.spiral import RayEpisodes, Spiral, recipe
    from spiral_ppl.inference.spiral.checkpoints import newest_readable
    from spiral_ppl.io import atomic_path

    # A bad setting is named before any data is read or folder made.
    spiral_config(config)
    _check_agent_settings(config)
    prog, train, test, out = _prepare_run(config, out)
    checkpoint = out / "checkpoint.pt"
    atomic_path.remove_stale(checkpoint)  # left by a run killed while it wrote
    if checkpoint.exists():
        keep = spiral_config(config).train.keep_checkpoints
        readable, state = newest_readable(checkpoint, keep)
        steps = state["program"]["steps"]  # a phase may have re-targeted the agent
        agent = Spiral.from_checkpoint(state, _with_steps(config, steps), device=device, source=readable)
        agent.set_hyperparameters({"train.phases": spiral_config(config).train.phases})
        print(f"resuming {readable} at update {agent.learner.updates}")
    else:
        if seed is not None:
            torch.manual_seed(checks.non_negative_int("seed", seed))
        agent = build_agent(config, prog, device)
    started = time.perf_counter()
    agent = recipe.run(agent, train, out, eval_data=test, program=lambda steps: _with_steps(config, steps),
                       steps=prog.steps,
                       backend=RayEpisodes(workers, address=ray_address) if workers else "local", progress=progress,
                       stop=None if minutes is None else lambda _: time.perf_counter() - started > 60 * minutes)
    agent.save(out / "agent.pt", training_state=False)
    _plot_training_curve(out / "eval.csv", out / "curve.png", title=config.get("name", ""))
    return agent


def _with_steps(config: dict[str, Any], steps: int) -> sp.programs.Program:
    """The configuration's program with ``steps`` steps (a factory's: its keyword ``steps``,
    passed only when it does not make that many already)."""
    table = config["program"]
    if "factory" in table and "steps" not in table:
        prog = build_program(config)
        if prog.steps == steps:
            return prog
    return build_program({**config, "program": {**table, "steps": steps}})


def pbt_experiment(
    config: dict[str, Any],
    out: str | Path,
    *,
    population: int,
    interval: int,
    device: str | None = None,
    progress: bool = False,
):
    """Population-based training of the configuration's agent for its recipe's updates, which
    must be A2C's throughout.

    The run folder receives Tune's results and checkpoints (``tune/``), ``best.pt`` (the
    fittest member's weights), ``population.csv`` (every member's fitness and
    hyper-parameters at each report) and ``population.png``.
    """
    from spiral_ppl.inference.spiral.pbt import population_based_training

    agent_config = spiral_config(config)
    _check_agent_settings(config)
    # Checked here as well as by Ray Tune, so that no run folder is made for a population that cannot run.
    if checks.positive_int("population", population) < 2:
        raise ValueError("population-based training needs a population of at least 2")
    checks.positive_int("interval", interval)
    phases = agent_config.train.phases
    if not phases or any(phase.kind != "a2c" or phase.settings or phase.program_steps or phase.updates is None
                         for phase in phases):
        raise ValueError("population-based training runs A2C only, for a number of updates, with the hyper-parameters "
                         "it tunes: give a recipe of plain a2c phases measured in updates, or warm-start with "
                         "`spiral-ppl train` first")
    prog, train, test, out = _prepare_run(config, out)
    agent = build_agent(config, prog, device)
    result = population_based_training(agent, train, updates=sum(phase.updates for phase in phases),
                                       population=population, interval=interval, storage=out / "tune",
                                       name=config["name"], eval_data=test, eval_size=agent_config.train.eval_size,
                                       progress=progress)
    result.best_agent.save(out / "best.pt", training_state=False)
    with open(out / "population.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    from spiral_ppl.plots import plt

    plt.close(result.plot(out / "population.png"))
    return result


def _prepare_run(config: dict[str, Any], out: str | Path):
    """The program, the training and test data, and the run folder (with ``config.json``) of a run."""
    prog = build_program(config)
    train, test = load_datasets(config, prog.image_size)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    except OSError as error:
        raise ValueError(f"cannot write the run folder {out}: {error.strerror or error}; choose another one") from None
    return prog, train, test, out


def _plot_training_curve(log: Path, path: Path, title: str) -> None:
    if not log.exists():
        return
    from spiral_ppl.plots import plt

    with open(log) as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return
    metric, reference = ("eval_l2", "blank_l2") if "eval_l2" in rows[0] else ("eval_ink", "data_ink")
    minutes = [float(row["seconds"]) / 60 for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(minutes, [float(row[metric]) for row in rows], marker="o", linewidth=2, label=f"held-out {metric}")
    axes.plot(minutes, [float(row[reference]) for row in rows], linestyle="--", color="grey", label=reference)
    axes.set_xlabel("training time (minutes)")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
