"""Training recipes as data: phases, run in order by one driver, resumable mid-phase.

A recipe is ``config.train.phases``, a tuple of
:class:`~spiral_ppl.inference.spiral.config.Phase`. Each phase is one kind of update for a
number of updates:

- ``"imitation"``: behaviour cloning of the training data's ground-truth programs (data sets
  whose items are ``(image, program)``, such as MUJOCO SCENES; :mod:`.imitation`);
- ``"a2c"``: A2C against the agent's reward (:mod:`.training`);
- ``"self_imitation"``: rounds of expert iteration: the best of ``passes`` of the agent's own
  passes on ``targets`` training images, then ``round_updates`` behaviour-cloning updates
  towards those programs (:func:`~spiral_ppl.inference.spiral.imitation.best_of_passes`).

A phase may change hyper-parameters that leave the networks alone (``settings``, e.g.
``{"a2c.lr": 3e-4}``, kept by the phases after it) and run on programs of another number of
steps (``program_steps``; phases without it run on the run's own program): the agent is
re-targeted between phases (:meth:`Spiral.retargeted`). In a TOML configuration::

    [[train.phases]]
    kind = "a2c"
    updates = 3000

    [[train.phases]]
    kind = "self_imitation"
    updates = 1120
    program_steps = 10
    settings = { "a2c.lr" = 3e-4 }

:func:`run` carries the phases out from wherever the agent's update count stands, writing
the checkpoint at least every ``train.checkpoint_every`` updates, so a run stopped in the
middle of a phase resumes there.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from spiral_ppl import checks
from spiral_ppl.inference.spiral.config import Phase
from spiral_ppl.inference.spiral.imitation import best_of_passes, holds_programs
from spiral_ppl.inference.spiral.logs import TrainingLog
from spiral_ppl.inference.spiral.sources import ImageSource, split_held_out
from spiral_ppl.inference.spiral.training import report

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral
    from spiral_ppl.programs.base import Program

def phase_ends(phases: tuple[Phase, ...]) -> list[int]:
    """The update count at the end of each phase."""
    return list(itertools.accumulate(phase.updates for phase in phases))


def run(agent: "Spiral", data: Any, out: str | Path, *, eval_data: Any = None,
        program: Callable[[int], "Program"] | None = None, steps: int | None = None, backend: Any = "local",
        progress: bool | None = None,
        stop: Callable[["Spiral"], bool] | None = None) -> "Spiral":
    """Carry out ``agent.config.train.phases`` on ``data`` into the run folder ``out``.

    :param data: training images (a tensor or a Dataset; of ``(image, program)`` items for imitation).
    :param eval_data: held-out targets of the evaluations (default: the last ``train.eval_size`` of ``data``).
    :param program: ``steps -> Program``, to re-target the agent to a phase's number of steps.
    :param steps: the run's own number of program steps, on which phases without
        ``program_steps`` run (default: the agent's; give it when resuming a re-targeted agent).
    :param stop: ``stop(agent)`` is asked between chunks of updates; ``True`` stops the run
        there, checkpointed (a time limit, say).
    :returns: the agent (a new one when a phase re-targeted it), checkpointed in ``out/checkpoint.pt``.
    """
    phases = agent.config.train.phases
    if not phases:
        raise ValueError("the configuration has no recipe: add [[train.phases]] tables (see spiral_ppl.inference."
                         "spiral.recipe) or call agent.fit(data, steps) directly")
    if any(phase.kind == "imitation" for phase in phases) and not holds_programs(data):
        raise ValueError(f"an imitation phase imitates the training data's ground-truth programs, whose items must be "
                         f"(image, {{component: actions}}), which of the shipped datasets only MUJOCO SCENES has; this "
                         f"run trains on {type(data).__name__}: use a2c or self_imitation phases")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = agent.prog
    steps = checks.positive_int("steps", steps) if steps is not None else prog.steps
    train_data, held_out = split_held_out(data, eval_data, agent.config.train.eval_size, prog.channels,
                                          prog.image_size)
    log = TrainingLog(out)
    log.discard_after(agent.learner.updates)
    try:
        for phase, end in zip(phases, phase_ends(phases)):
            if agent.learner.updates >= end:
                continue
            phase_steps = phase.program_steps or steps
            if phase_steps != agent.prog.steps:
                if program is None:
                    raise ValueError(f"a {phase.kind} phase runs on {phase_steps}-step programs and the agent's "
                                     f"has {agent.prog.steps}: pass program=steps -> Program to re-target it")
                agent = agent.retargeted(program(phase_steps))
            if phase.settings:
                agent.set_hyperparameters(phase.settings)
            _run_phase(agent, phase, end, train_data, held_out, out, log, backend, progress, stop)
            if stop is not None and stop(agent):
                break
    finally:
        log.close()
    return agent


def _run_phase(agent: "Spiral", phase: Phase, end: int, data: Any, held_out: torch.Tensor, out: Path,
               log: TrainingLog, backend: Any, progress: bool | None, stop: Callable[["Spiral"], bool] | None) -> None:
    """Updates of one phase until the count reaches ``end``, in checkpointed chunks."""
    train = agent.config.train
    checkpoint = out / "checkpoint.pt"
    chunk_size = train.checkpoint_every or train.eval_every or phase.updates
    images = None if phase.kind != "self_imitation" else ImageSource(data, agent.prog.channels, agent.prog.image_size)
    while agent.learner.updates < end and not (stop is not None and stop(agent)):
        chunk = min(chunk_size - agent.learner.updates % chunk_size, end - agent.learner.updates)
        if phase.kind == "a2c":
            agent.fit(data, chunk, eval_data=held_out, log_dir=out, checkpoint=checkpoint, progress=progress,
                      backend=backend)
            continue
        if phase.kind == "imitation":
            history = agent.imitate(data, chunk, progress=progress)
        else:
            history = []
            while len(history) < chunk:
                seed = agent.learner.updates  # a new draw every round, also when a run is resumed
                generator = torch.Generator().manual_seed(seed)
                targets = images.images(images.indices[torch.randint(len(images), (phase.targets,),
                                                                     generator=generator)])
                labels = best_of_passes(agent, targets.to(agent.device), phase.passes, seed)
                history += agent.imitate((targets, labels), min(phase.round_updates, chunk - len(history)),
                                         progress=False)
        for metrics in history:
            if train.log_every and metrics["update"] % train.log_every == 0:
                log.write("imitation", metrics)
        phase_over = agent.learner.updates >= end
        report(agent, dict(history[-1]), phase_over, held_out=held_out, log=log, log_dir=out, checkpoint=checkpoint,
               table=None)
