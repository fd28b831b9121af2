"""The paper's experiments as configuration files, and what turns one into a program and data.

A configuration is a TOML file with five tables (see ``spiral_ppl/configs/``):

- ``[data]``: the dataset and its train / held-out test split;
- ``[program]``: the renderer and its settings, and the number of steps;
- ``[agent]``: ``conditional``, ``reward``, ``blind`` (the :class:`~spiral_ppl.inference.Spiral` switches);
- ``[config]``: any :class:`~spiral_ppl.inference.SpiralConfig` field;
- ``[train]``: ``steps``, ``eval_every``, ``eval_size``, ``checkpoint_every``, ``log_every``,
  and ``imitation_steps``: how many of the ``steps`` updates are behaviour cloning of the
  dataset's ground-truth programs (:meth:`~spiral_ppl.inference.Spiral.imitate`) before
  reinforcement learning takes over (MUJOCO SCENES only; 0 in the paper's experiments).

Any value can be overridden with ``key=value`` strings (``train.steps=100``); values are read
as TOML (``1e-4``, ``true``, ``"brush"``), and bare words as strings.

Example::

    >>> config = load_config("mnist-recon", ["train.steps=100", "program.steps=5"])
    >>> config["train"]["steps"], config["program"]["steps"], config["agent"]["reward"]
    (100, 5, 'critic')
"""

from __future__ import annotations

import copy
import csv
import json
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset, Subset

import spiral_ppl as sp

SECTIONS = ("data", "program", "agent", "config", "train")


def list_configs() -> list[str]:
    """Names of the configurations shipped with the package."""
    folder = resources.files("spiral_ppl") / "configs"
    return sorted(entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a shipped configuration by name, or a TOML file by path, and apply ``overrides``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"no configuration file at {path}")
        text = path.read_text()
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
        config.setdefault(section, {})
    config.setdefault("name", path.stem)
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: dict[str, Any], override: str) -> None:
    """Set ``section.key=value`` in ``config`` (in place); the value is parsed as TOML."""
    key, separator, raw = override.partition("=")
    section, dot, field = key.strip().partition(".")
    if not separator or not dot or not field:
        raise ValueError(f"an override is section.key=value (e.g. train.steps=100), got {override!r}")
    if section not in SECTIONS:
        raise ValueError(f"override {override!r}: unknown table {section!r}; tables are {list(SECTIONS)}")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    config[section][field] = value


def build_program(config: dict[str, Any]) -> sp.programs.Program:
    """The program a configuration describes (``[program]``)."""
    settings = copy.deepcopy(config["program"])
    renderer = settings.pop("renderer", "brush")
    steps = settings.pop("steps", 20)
    if renderer in ("brush", "mypaint"):
        kind = sp.renderers.Brush if renderer == "brush" else getattr(sp.renderers, "MyPaint", None)
        if kind is None:
            raise ValueError("renderer 'mypaint' is not available in this installation")
        return sp.programs.PaintProgram(_construct(kind, settings, "program"), steps=steps)
    if renderer == "mujoco":
        return sp.programs.SceneProgram(_construct(sp.renderers.MujocoScene, settings, "program"), steps=steps)
    raise ValueError(f"[program] renderer must be 'brush', 'mypaint' or 'mujoco', got {renderer!r}")


def _construct(kind, settings: dict[str, Any], table: str):
    try:
        return kind(**settings)
    except TypeError as error:
        raise ValueError(f"[{table}] settings do not fit {kind.__name__}: {error}") from None


def load_datasets(config: dict[str, Any], image_size: int) -> tuple[Dataset, Dataset]:
    """The training and held-out test datasets of a configuration (``[data]``)."""
    return load_dataset(config, image_size, "train"), load_dataset(config, image_size, "test")


def load_dataset(config: dict[str, Any], image_size: int, part: str) -> Dataset:
    """The ``part`` (``"train"`` or ``"test"``) of a configuration's dataset (``[data]``)."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    data = dict(config["data"])
    name = data.pop("dataset", None)
    root = data.pop("root", None)
    if name == "mnist":
        return sp.data.MNIST(root, split=data.get(f"{part}_split", part), image_size=image_size)
    if name == "omniglot":
        default = "background" if part == "train" else "evaluation"
        return sp.data.Omniglot(root, split=data.get(f"{part}_split", default), image_size=image_size)
    if name == "celeba":
        faces = sp.data.CelebA(root, image_size=image_size)
        held_out = max(1, int(len(faces) * data.get("test_fraction", 0.05)))
        if held_out >= len(faces):
            raise ValueError(f"CelebA in {faces.root} has {len(faces)} images: too few to hold {held_out} out")
        split = len(faces) - held_out
        return Subset(faces, range(split) if part == "train" else range(split, len(faces)))
    if name == "mujoco_scenes":
        size, seed = (50_000, 0) if part == "train" else (1000, 1)
        return sp.data.MujocoScenes(root, size=data.get(f"{part}_size", size), seed=data.get(f"{part}_seed", seed),
                                    image_size=image_size, order=data.get("order", "generated"))
    raise ValueError(f"[data] dataset must be 'mnist', 'omniglot', 'celeba' or 'mujoco_scenes', got {name!r}")


def target_images(dataset: Dataset, count: int, start: int = 0) -> torch.Tensor:
    """``count`` images ``(N, C, H, W)`` from a dataset of images or ``(image, ...)`` tuples."""
    if count < 1 or start < 0 or start + count > len(dataset):
        raise ValueError(f"cannot take {count} images from index {start} of a dataset of {len(dataset)}")
    if hasattr(dataset, "images"):
        return dataset.images(range(start, start + count))
    items = [dataset[index] for index in range(start, start + count)]
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items])


def train_experiment(
    config: dict[str, Any],
    out: str | Path,
    *,
    device: str | None = None,
    minutes: float | None = None,
    progress: bool | None = None,
    workers: int = 0,
    ray_address: str | None = None,
):
    """Train the configuration's SPIRAL agent into the run folder ``out``, resuming if it holds a checkpoint.

    The folder receives ``config.json`` (the resolved configuration), ``train.csv`` and
    ``eval.csv`` logs, sample grids, ``checkpoint.pt`` (written atomically; a rerun resumes
    exactly where it stopped), ``curve.png`` (held-out metric against training time) and
    ``agent.pt`` (final weights). ``minutes`` stops early, after the update that crosses it.
    With ``[train] imitation_steps`` the first updates imitate the dataset's programs
    (logged in ``imitation.csv``, checkpointed like the others), and A2C runs the rest.
    ``workers`` > 0 rolls out on that many Ray workers (:class:`~spiral_ppl.inference.spiral.RayBackend`,
    on the cluster at ``ray_address`` when given).
    """
    from spiral_ppl.inference.spiral import RayBackend, Spiral, SpiralConfig

    settings = _train_settings(config)
    prog, train, test, out = _prepare_run(config, out)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        agent = Spiral.load(checkpoint, prog, device=device)
        print(f"resuming {checkpoint} at update {agent.learner.updates}")
    else:
        agent = Spiral(prog, **config["agent"], device=device, config=SpiralConfig.from_dict(config["config"]))
    started = time.perf_counter()
    imitate_dataset_programs(agent, train, settings, checkpoint, out, progress=progress)
    common = dict(eval_data=test, eval_size=settings["eval_size"], eval_every=settings["eval_every"], log_dir=out,
                  log_every=settings["log_every"], checkpoint=checkpoint, checkpoint_every=settings["checkpoint_every"],
                  progress=progress, backend=RayBackend(workers, address=ray_address) if workers else "local")
    while agent.learner.updates < settings["steps"] and not (
            minutes is not None and time.perf_counter() - started > 60 * minutes):
        remaining = settings["steps"] - agent.learner.updates
        chunk = remaining if minutes is None else min(remaining, max(1, settings["eval_every"]))
        agent.fit(train, chunk, **common)
    agent.save(out / "agent.pt", training_state=False)
    _plot_training_curve(out / "eval.csv", out / "curve.png", title=config.get("name", ""))
    return agent


def imitate_dataset_programs(agent, train: Dataset, settings: dict[str, Any], checkpoint: Path, out: Path, *,
                             progress: bool | None = None) -> None:
    """The behaviour-cloning updates of a run (``[train] imitation_steps``) not done yet, checkpointed as they go."""
    from spiral_ppl.inference.spiral.agent import holds_programs
    from spiral_ppl.inference.spiral.logs import TrainingLog

    target = min(settings["imitation_steps"], settings["steps"])
    if agent.learner.updates >= target:
        return
    if not holds_programs(train):
        raise ValueError(
            f"[train] imitation_steps = {settings['imitation_steps']} imitates ground-truth programs, which of the "
            f"shipped datasets only MUJOCO SCENES has; this run trains on {type(train).__name__}: "
            "set train.imitation_steps=0"
        )
    log = TrainingLog(out)
    try:
        while agent.learner.updates < target:
            chunk = target - agent.learner.updates
            if settings["checkpoint_every"]:
                chunk = min(chunk, settings["checkpoint_every"])
            for metrics in agent.imitate(train, chunk, progress=progress):
                if settings["log_every"] and metrics["update"] % settings["log_every"] == 0:
                    log.write("imitation", metrics)
            agent.save(checkpoint)
    finally:
        log.close()


def pbt_experiment(
    config: dict[str, Any],
    out: str | Path,
    *,
    population: int,
    interval: int,
    device: str | None = None,
    progress: bool = False,
):
    """Population-based training of the configuration's agent (``[train] steps`` updates per member).

    The run folder receives Tune's results and checkpoints (``tune/``), ``best.pt`` (the
    fittest member's weights), ``population.csv`` (every member's fitness and
    hyper-parameters at each report) and ``population.png``.
    """
    from spiral_ppl.inference.spiral import Spiral, SpiralConfig
    from spiral_ppl.inference.spiral.pbt import population_based_training

    settings = _train_settings(config)
    if settings["imitation_steps"]:
        raise ValueError("population-based training runs reinforcement learning only: set train.imitation_steps=0, "
                         "or warm-start with `spiral-ppl train` first")
    prog, train, test, out = _prepare_run(config, out)
    agent = Spiral(prog, **config["agent"], device=device, config=SpiralConfig.from_dict(config["config"]))
    result = population_based_training(agent, train, updates=settings["steps"], population=population,
                                       interval=interval, storage=out / "tune", name=config["name"], eval_data=test,
                                       eval_size=settings["eval_size"], progress=progress)
    result.best_agent.save(out / "best.pt", training_state=False)
    with open(out / "population.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    from spiral_ppl.plots import plt

    plt.close(result.plot(out / "population.png"))
    return result


def _train_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The ``[train]`` table over its defaults; unknown keys are refused."""
    settings = {"steps": 1000, "eval_every": 500, "eval_size": 64, "checkpoint_every": 250, "log_every": 10,
                "imitation_steps": 0}
    unknown = sorted(set(config["train"]) - set(settings))
    if unknown:
        raise ValueError(f"[train] unknown settings {unknown}; known: {sorted(settings)}")
    return {**settings, **config["train"]}


def _prepare_run(config: dict[str, Any], out: str | Path):
    """The program, the training and test data, and the run folder (with ``config.json``) of a run."""
    prog = build_program(config)
    train, test = load_datasets(config, prog.image_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
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
