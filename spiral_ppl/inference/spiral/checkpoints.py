"""SPIRAL agents on disk: save, read, the shipped agents, and what a checkpoint says of its program.

A checkpoint is one ``torch.save`` file, written atomically (a crash leaves the previous file
whole), holding the agent's weights, configuration, decoding, a description of its program
(:func:`describe_program`: a built-in program's renderer, or the reference ``"module:factory"``
and options a program of your own was resolved from) and a checksum of all of it, which
:func:`read` verifies. With its
training state (optimisers, replay buffer, random streams, update count)
:meth:`Spiral.fit <spiral_ppl.inference.Spiral.fit>` resumes exactly. Training keeps the
``train.keep_checkpoints`` newest (``checkpoint.pt``, ``checkpoint.1.pt``, ...), and
:func:`newest_readable` falls back on an older one when the newest is damaged. Files of the
first format (one flat table of settings, one list of policy modules per kind of layer, no
checksum) are upgraded as they are read.

The agents shipped in ``spiral_ppl/pretrained/`` each come with a model card (``<name>.md``).
:meth:`Spiral.load <spiral_ppl.inference.Spiral.load>` builds an agent from what :func:`read` returns.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spiral_ppl import checks
from spiral_ppl.inference.randomness import random_state
from spiral_ppl.inference.spiral.config import from_flat
from spiral_ppl.inference.spiral.policy import upgrade_state_dict
from spiral_ppl.io import atomic_path
from spiral_ppl.programs.base import Program

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral

#: Format tag of checkpoint files.
CHECKPOINT_FORMAT = "spiral_ppl.Spiral/2"
FIRST_FORMAT = "spiral_ppl.Spiral/1"
#: What two programs must share for one agent to act on both.
SAME_PROGRAM = ("action_space", "channels", "image_size", "steps")


def describe_program(prog: Program) -> dict[str, Any]:
    """What a checkpoint records of its program, to rebuild it or to check another against it."""
    from spiral_ppl.io import renderer_config
    from spiral_ppl.programs.reference import reference_of
    from spiral_ppl.programs.renderer_program import RendererProgram

    renderer = None
    if isinstance(prog, RendererProgram):
        try:
            renderer = renderer_config(prog.renderer)
        except ValueError:  # no JSON description for this renderer: load() will need prog=
            renderer = None
    return {
        "class": type(prog).__name__,
        "action_space": [[c.name, c.size, c.kind] for c in prog.action_space],
        "channels": prog.channels,
        "image_size": prog.image_size,
        "steps": prog.steps,
        "pixel_scale": prog.pixel_scale,
        "renderer": renderer,
        # How to make it again: {"program": "module:factory", "options": {...}}, or None.
        "reference": None if reference_of(prog) is None else reference_of(prog).to_dict(),
    }


def description_differences(first: dict[str, Any], second: dict[str, Any],
                            keys: tuple[str, ...] = SAME_PROGRAM) -> list[str]:
    """Which of ``keys`` differ between two descriptions of programs."""
    return [key for key in keys if first[key] != second[key]]


def program_differences(first: Program, second: Program, keys: tuple[str, ...] = SAME_PROGRAM) -> list[str]:
    """Which of ``keys`` of :func:`describe_program` differ between two programs."""
    return description_differences(describe_program(first), describe_program(second), keys)


def content_checksum(value: Any, digest=None) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other
    value's text, in a fixed order. A flipped byte anywhere changes it."""
    digest = hashlib.sha256() if digest is None else digest
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        digest.update(f"tensor {value.dtype} {tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}:".encode())
            content_checksum(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            content_checksum(item, digest)
    else:
        digest.update(f"{value!r};".encode())
    return digest.hexdigest()


def older(path: str | Path, generation: int) -> Path:
    """The name of the ``generation``-th older copy of a checkpoint: ``checkpoint.1.pt``, ..."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{generation}{path.suffix}")


def save(agent: "Spiral", path: str | Path, *, training_state: bool = True, keep: int = 1) -> None:
    """Write ``agent`` atomically, with its training state unless ``training_state=False``.

    Without the training state the file holds the weights only (smaller, for inference;
    training after loading it starts with fresh optimisers). With ``keep`` > 1 the file
    already at ``path`` is kept as ``NAME.1.pt`` (and that one as ``NAME.2.pt``, ...), so the
    ``keep`` newest checkpoints stay on disk and a run can fall back on an older one.
    """
    keep = checks.positive_int("keep", keep, hint="checkpoints kept on disk")
    if Path(path).is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; give the checkpoint a file name, such as "
                         f"{str(Path(path) / 'agent.pt')!r}")
    state = {
        "format": CHECKPOINT_FORMAT,
        "program": describe_program(agent.prog),
        "conditional": agent.conditional,
        "blind": agent.blind,
        "config": agent.config.to_dict(),
        "decoding": dataclasses.asdict(agent.decoding),
        "policy": agent.policy.state_dict(),
        "critic": agent.critic.state_dict() if agent.critic is not None else None,
        "learner": agent.learner.state_dict() if training_state else None,
        "train_seconds": agent.train_seconds,
        "train_cpu_seconds": agent.train_cpu_seconds,
        "source_state": agent._source_state if training_state else None,
        "rng": random_state() if training_state else None,
    }
    state["checksum"] = content_checksum(state)
    for generation in range(keep - 1, 0, -1):
        newer = older(path, generation - 1) if generation > 1 else Path(path)
        if newer.exists():
            os.replace(newer, older(path, generation))
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def read(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file, in the current format, or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SPIRAL checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path} is not a readable SPIRAL checkpoint (corrupt, truncated or another kind of file): "
                         f"{type(error).__name__}: {str(error)[:200]}") from None
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found == FIRST_FORMAT:  # written before checkpoints carried a checksum
        return _upgrade_first_format(state)
    if found != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a SPIRAL checkpoint of format {CHECKPOINT_FORMAT!r} (found {found!r})")
    recorded = state.pop("checksum", None)
    if recorded != content_checksum(state):
        raise ValueError(f"{path} is damaged: its content does not match the checksum written with it (a disk or copy "
                         "error changed it); use an older checkpoint (NAME.1.pt beside it, if training kept one) or "
                         "the run's agent.pt")
    return state


def newest_readable(path: str | Path, keep: int) -> tuple[Path, dict[str, Any]]:
    """The newest of ``path`` and its ``keep - 1`` older copies that reads without error, and
    its content; says on stderr which it skipped and why. Raises the newest file's error if none reads."""
    first_error = None
    for generation in range(keep):
        candidate = Path(path) if generation == 0 else older(path, generation)
        if not candidate.exists():
            continue
        try:
            state = read(candidate)
        except ValueError as error:
            first_error = first_error or error
            print(f"skipping {candidate}: {error}", file=sys.stderr)
            continue
        if first_error is not None:
            print(f"resuming from the older checkpoint {candidate}", file=sys.stderr)
        return candidate, state
    if first_error is not None:
        raise first_error
    raise FileNotFoundError(f"no SPIRAL checkpoint at {path}")


def check_recorded_program(state: dict[str, Any], prog: Program | None, path: str | Path) -> Program:
    """The program a checkpoint's agent acts on: ``prog`` if it matches what the checkpoint
    recorded (action space, images and steps), else the program rebuilt from the record (one
    rebuilt from a reference is checked too: its factory may have changed since)."""
    recorded = state["program"]
    which = "the program given"
    if prog is None:
        prog = _rebuild_program(recorded, Path(path))
        if recorded.get("reference") is None:
            return prog
        which = f"the program {recorded['reference']['program']} makes now"
    if not isinstance(prog, Program):
        raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
    differ = description_differences(describe_program(prog), recorded)
    if differ:
        raise ValueError(
            f"{path} holds an agent for a {recorded['class']} with {recorded['steps']} steps, images "
            f"{recorded['channels']}x{recorded['image_size']} and actions "
            f"{[tuple(c) for c in recorded['action_space']]}; {which} differs in {differ}"
        )
    return prog


def pretrained_names() -> list[str]:
    """Agents shipped with the package (see each one's model card, ``<name>.md``)."""
    folder = resources.files("spiral_ppl") / "pretrained"
    return sorted(entry.name[: -len(".pt")] for entry in folder.iterdir() if entry.name.endswith(".pt"))


def pretrained_path(name: str):
    """The file of a pretrained agent shipped with the package (a context manager, as
    :func:`importlib.resources.as_file` gives it)."""
    names = pretrained_names()
    if name not in names:
        raise ValueError(f"no pretrained agent {name!r}; available: {names}")
    return resources.as_file(resources.files("spiral_ppl") / "pretrained" / f"{name}.pt")


def model_card(name: str) -> str:
    """The model card of a pretrained agent: data, recipe, device and final l2."""
    card = resources.files("spiral_ppl") / "pretrained" / f"{name}.md"
    if not card.is_file():
        raise ValueError(f"no model card for {name!r}; pretrained agents: {pretrained_names()}")
    return card.read_text()


def _upgrade_first_format(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the first format in the current one."""
    config = from_flat(state["config"]).replace({"reward.kind": state["reward"]})
    action_space = [_component(entry) for entry in state["program"]["action_space"]]
    return {
        **state,
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "decoding": {"temperature": state.get("temperature", 1.0), "greedy_first": state.get("greedy_first", False),
                     "smc_intermediate": state.get("smc_intermediate", "model"),
                     "smc_tempering": state.get("smc_tempering")},
        "policy": upgrade_state_dict(state["policy"], action_space),
    }


def _component(entry: list):
    from spiral_ppl.renderers.base import Component

    name, size, kind = entry
    return Component(name, size, kind)


def _rebuild_program(recorded: dict[str, Any], path: Path) -> Program:
    from spiral_ppl.io import renderer_from_config
    from spiral_ppl.programs.reference import resolve_program
    from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram
    from spiral_ppl.programs.scene_program import SceneProgram

    reference = recorded.get("reference")  # absent from checkpoints written before references
    if reference is not None:
        return resolve_program(reference["program"], reference["options"],
                               argument=f"the program reference saved in {path}")
    # Rebuilt programs get their class's default priors.
    classes = {"PaintProgram": PaintProgram, "RendererProgram": RendererProgram, "SceneProgram": SceneProgram}
    if recorded["renderer"] is None or recorded["class"] not in classes:
        raise ValueError(f"{path} holds an agent for a {recorded['class']}, which was not made from a program "
                         "reference 'module:factory', so the checkpoint cannot rebuild it; pass the program: "
                         "Spiral.load(path, prog=...) (on the command line: --program module:factory)")
    renderer = renderer_from_config(recorded["renderer"])
    return classes[recorded["class"]](renderer, recorded["steps"], pixel_scale=recorded["pixel_scale"])
