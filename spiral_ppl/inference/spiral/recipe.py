"""Training recipes as data: phases, run in order by one driver, resumable mid-phase.

A recipe is ``config.train.phases``, a tuple of
:class:`~spiral_ppl.inference.spiral.config.Phase`. Each phase is one kind of update, for a
number of updates or of minutes of training time:

- ``"sleep"``: behaviour cloning of programs drawn from the program's own prior and rendered
  by it (:func:`~spiral_ppl.inference.spiral.imitation.sleep_update`); it needs no data;
- ``"imitation"``: behaviour cloning of the training data's ground-truth programs (data sets
  whose items are ``(image, program)``, such as MUJOCO SCENES; :mod:`.imitation`);
- ``"a2c"``: A2C against the agent's reward on the target images, the wake phase (:mod:`.training`);
- ``"self_imitation"``: rounds of expert iteration: the agent's own search on ``targets``
  training images (the best of ``passes`` passes, or its guided SMC with ``search = "smc"``),
  then ``round_updates`` behaviour-cloning updates towards the programs it found
  (:func:`~spiral_ppl.inference.spiral.imitation.search_labels`);
- ``"distillation"``: the same rounds, with the search of another agent, the ``teacher`` (a
  pretrained name or an agent file, for programs with the same actions and steps), in place
  of the agent's own. The student may see other images than the teacher (the targets are
  resized for it) or none at all: an unconditional agent so learns to paint what the teacher
  finds in the data, a warm start for its critic (a policy distilled from search, as in
  Silver et al. 2017, with the data's images as the only supervision).

Only the ``imitation`` phase reads programs from a data set; the others learn from the
program and unlabelled images alone. :func:`default_phases` is the label-free schedule that
``Spiral.fit(images, minutes=M)`` runs.

A phase may change hyper-parameters that leave the networks alone (``settings``, e.g.
``{"a2c.lr": 3e-4}``, kept by the phases after it) and run on programs of another number of
steps (``program_steps``; phases without it run on the run's own program): the agent is
re-targeted between phases (:meth:`Spiral.retargeted`). In a TOML configuration::

    [[train.phases]]
    kind = "sleep"
    minutes = 3
    settings = { "a2c.lr" = 1e-3 }

    [[train.phases]]
    kind = "self_imitation"
    minutes = 2
    passes = 10

:func:`run` carries the phases out from wherever the agent's update count (or training time)
stands, writing the checkpoint at least every ``train.checkpoint_every`` updates, so a run
stopped in the middle of a phase resumes there. Phases measured in updates resume exactly:
the run continues as an uninterrupted one would have.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.data.resize import resized
from spiral_ppl.inference.engine import hide_progress
from spiral_ppl.inference.spiral import training
from spiral_ppl.inference.spiral.config import Phase
from spiral_ppl.inference.spiral.imitation import holds_programs, search_labels, sleep_update
from spiral_ppl.inference.spiral.logs import TrainingLog
from spiral_ppl.inference.spiral.sources import ImageSource, split_held_out
from spiral_ppl.inference.spiral.training import denormals_flushed, report, time_record, training_time

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral
    from spiral_ppl.programs.base import Program

#: The label-free schedule of ``Spiral.fit(images, minutes=M)``: each phase's share of the M
#: minutes and its settings. Sleep teaches the policy the program's prior with a learning
#: rate ten times the paper's (behaviour cloning tolerates it); self-imitation then moves it
#: from the prior's images to the targets' with the best of its own passes.
DEFAULT_SCHEDULE = (
    ("sleep", 0.5, {"a2c.lr": 1e-3}),
    ("self_imitation", 0.5, {"a2c.lr": 3e-4}),
)


def default_phases(minutes: float) -> tuple[Phase, ...]:
    """:data:`DEFAULT_SCHEDULE` scaled to ``minutes`` of training time."""
    checks.positive_number("minutes", minutes)
    return tuple(Phase(kind, minutes=share * minutes, settings=settings) for kind, share, settings in DEFAULT_SCHEDULE)


def _as_phases(phases: Any) -> tuple[Phase, ...]:
    """A list of phases, each a :class:`Phase` or the dict of one, as a tuple of phases."""
    if isinstance(phases, (Phase, str, bytes)) or not isinstance(phases, (list, tuple)):
        raise TypeError(f"phases must be a list of phases, e.g. [Phase('sleep', updates=100)], got "
                        f"{type(phases).__name__} {phases!r}"[:300])
    as_phases = []
    for index, phase in enumerate(phases):
        if isinstance(phase, dict):
            phase = Phase.from_dict(phase)
        if not isinstance(phase, Phase):
            raise TypeError(f"phases[{index}] must be a Phase or the dict of one, got {type(phase).__name__}")
        as_phases.append(phase)
    return tuple(as_phases)


def phase_ends(phases: tuple[Phase, ...], start: float = 0) -> list[float]:
    """Where each phase ends: an update count, or seconds of training time, from ``start``."""
    return [start + end for end in itertools.accumulate(phase.length for phase in phases)]


def run(agent: "Spiral", data: Any = None, out: str | Path | None = None, *, eval_data: Any = None,
        phases: tuple[Phase, ...] | None = None, origin: tuple[int, float] = (0, 0.0),
        program: Callable[[int], "Program"] | None = None, steps: int | None = None, backend: Any = "local",
        progress: bool | None = None, stop: Callable[["Spiral"], bool] | None = None,
        callback: Callable[[dict[str, float]], Any] | None = None, checkpoint: str | Path | None = None) -> "Spiral":
    """Carry out ``phases`` (default: ``agent.config.train.phases``) on ``data`` into the run folder ``out``.

    :param data: training images (a tensor or a Dataset; of ``(image, program)`` items for
        imitation); only a recipe of sleep phases alone runs without.
    :param out: the run folder: logs, sample grids and ``checkpoint.pt`` (``None``: nothing written).
    :param eval_data: held-out targets of the evaluations (default: the last ``train.eval_size`` of
        ``data``, when ``train.eval_every`` asks for evaluations).
    :param origin: the update count and training seconds at which the recipe started: phases
        are measured from there (``Spiral.fit`` starts a recipe where the agent stands).
    :param program: ``steps -> Program``, to re-target the agent to a phase's number of steps.
    :param steps: the run's own number of program steps, on which phases without
        ``program_steps`` run (default: the agent's; give it when resuming a re-targeted agent).
    :param stop: ``stop(agent)`` is asked after every update; ``True`` stops the run there,
        checkpointed (a time limit, say).
    :param callback: called with each update's metrics.
    :param checkpoint: where to write the checkpoint (default: ``out/checkpoint.pt``; none without ``out``).
    :returns: the agent (a new one when a phase re-targeted it), checkpointed in ``out/checkpoint.pt``.
    """
    from spiral_ppl.inference.spiral.agent import Spiral  # the agent's module imports this one

    if not isinstance(agent, Spiral):
        raise TypeError(f"agent must be a spiral_ppl.inference.Spiral, got {type(agent).__name__}")
    phases = agent.config.train.phases if phases is None else _as_phases(phases)
    checks.optional_callable("stop", stop, signature="stop(agent) -> bool")
    checks.optional_callable("callback", callback, signature="callback(metrics)")
    hide_progress(progress)  # checks it before any work
    if not phases:
        raise ValueError("the configuration has no recipe: add [[train.phases]] tables (see spiral_ppl.inference."
                         "spiral.recipe), call agent.fit(data, minutes=M) for the default one, or agent.fit(data, "
                         "steps=N) for A2C alone")
    if data is None and any(phase.kind != "sleep" for phase in phases):
        kinds = sorted({phase.kind for phase in phases} - {"sleep"})
        raise ValueError(f"this recipe's {', '.join(kinds)} phases train on data: pass data (only sleep needs none)")
    if any(phase.kind == "imitation" for phase in phases) and not holds_programs(data):
        raise ValueError(f"an imitation phase imitates the training data's ground-truth programs, whose items must be "
                         f"(image, {{component: actions}}), which of the shipped datasets only MUJOCO SCENES has; this "
                         f"run trains on {type(data).__name__}: use sleep, a2c or self_imitation phases")
    if any(phase.kind in ("a2c", "self_imitation", "distillation") for phase in phases):
        # Every image is checked before the first phase: a bad one is named now, not hours in.
        ImageSource(data, agent.prog.channels, agent.prog.image_size, seed=0)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None and out is not None:
        checkpoint = out / "checkpoint.pt"
    steps = checks.positive_int("steps", steps) if steps is not None else agent.prog.steps
    # Teachers of the phases still to run are read and checked before the first one: a wrong one
    # is named now, not hours in (and a run resumed past its distillation needs its teacher no more).
    teachers = {phase.teacher: _teacher(phase, agent, phase.program_steps or steps)
                for index, phase in enumerate(phases)
                if phase.kind == "distillation" and not PhaseRun(agent, phases, index, origin).done}
    train_data, held_out = data, None
    if eval_data is not None or (agent.config.train.eval_every and data is not None):
        train_data, held_out = split_held_out(data, eval_data, agent.config.train.eval_size, agent.prog.channels,
                                              agent.prog.image_size)
    log = TrainingLog(out) if out is not None else None
    if log is not None:
        log.discard_after(agent.learner.updates)
    try:
        for index, phase in enumerate(phases):
            if PhaseRun(agent, phases, index, origin).done:
                continue
            phase_steps = phase.program_steps or steps
            if phase_steps != agent.prog.steps:
                if program is None:
                    raise ValueError(f"a {phase.kind} phase runs on {phase_steps}-step programs and the agent's "
                                     f"has {agent.prog.steps}: pass program=steps -> Program to re-target it")
                agent = agent.retargeted(program(phase_steps))
            if phase.settings:
                agent.set_hyperparameters(phase.settings)
            _run_phase(agent, PhaseRun(agent, phases, index, origin, stop), train_data, held_out, out, checkpoint,
                       log, backend, progress, callback, teachers.get(phase.teacher))
            if stop is not None and stop(agent):
                break
    finally:
        if log is not None:
            log.close()
    return agent


class PhaseRun:
    """Where a phase ends and how far the agent has come: in updates or in seconds of training."""

    def __init__(self, agent: "Spiral", phases: tuple[Phase, ...], index: int, origin: tuple[int, float],
                 stop: Callable[["Spiral"], bool] | None = None) -> None:
        self.agent, self.phase, self.stop = agent, phases[index], stop
        self.in_updates = self.phase.minutes is None
        self.end = phase_ends(phases, origin[0] if self.in_updates else origin[1])[index]

    @property
    def position(self) -> float:
        return self.agent.learner.updates if self.in_updates else self.agent.train_seconds

    @property
    def remaining(self) -> float:
        return self.end - self.position

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    @property
    def stopped(self) -> bool:
        """The phase is over, or the caller's ``stop`` says to stop."""
        return self.done or (self.stop is not None and bool(self.stop(self.agent)))

    def updates_this_round(self, round_updates: int) -> int:
        """At most ``round_updates``, cut at the next checkpoint (so that a resumed run starts its
        rounds where an uninterrupted one did), at the next evaluation and, in updates, at the
        phase's end."""
        updates, train = self.agent.learner.updates, self.agent.config.train
        count = round_updates
        for every in (train.checkpoint_every, train.eval_every):
            if every:
                count = min(count, every - updates % every)
        return max(1, min(count, int(self.remaining))) if self.in_updates else count


def _teacher(phase: Phase, agent: "Spiral", steps: int) -> "Spiral":
    """The agent a distillation ``phase`` names, on ``agent``'s device, once it is known to label
    programs ``agent`` can imitate: the same actions and channels, ``steps`` steps, and a
    conditional policy (one that reads its targets)."""
    from spiral_ppl.inference.spiral.agent import Spiral
    from spiral_ppl.inference.spiral.checkpoints import program_differences

    teacher = Spiral.named(phase.teacher, device=agent.device, argument="distillation phase teacher")
    differ = program_differences(teacher.prog, agent.prog, ("action_space", "channels"))
    if differ:
        raise ValueError(f"distillation phase teacher {phase.teacher!r} acts on {teacher.prog!r}, which differs from "
                         f"the student's program in {differ}; a teacher must label the student's actions")
    if teacher.prog.steps != steps:
        raise ValueError(f"distillation phase teacher {phase.teacher!r} paints {teacher.prog.steps}-step programs "
                         f"and the phase runs on {steps}-step ones; set the phase's program_steps = "
                         f"{teacher.prog.steps}, or give a teacher for {steps} steps")
    if not teacher.conditional or teacher.blind:
        raise ValueError(f"distillation phase teacher {phase.teacher!r} does not read its targets (conditional="
                         f"{teacher.conditional}, blind={teacher.blind}); a teacher must reconstruct them")
    return teacher


def _run_phase(agent: "Spiral", run: PhaseRun, data: Any, held_out: torch.Tensor | None, out: Path | None,
               checkpoint: Path | None, log: TrainingLog | None, backend: Any, progress: bool | None,
               callback: Callable[[dict[str, float]], Any] | None, teacher: "Spiral | None" = None) -> None:
    """Updates of one phase until it is over (or the caller stops it), logged, evaluated and checkpointed."""
    phase = run.phase
    unit = "update" if run.in_updates else "s"
    with tqdm(total=round(phase.length), initial=round(phase.length - run.remaining), unit=unit,
              desc=f"{agent.name} {phase.kind}", disable=hide_progress(progress)) as bar:
        def after_update(metrics: dict[str, float]) -> None:
            bar.update(round(phase.length - run.remaining) - bar.n)
            if callback is not None:
                callback(metrics)

        if phase.kind == "a2c":
            count = int(run.remaining) if run.in_updates else 10**9  # a phase in minutes stops on time
            training.fit(agent, data, count, eval_data=held_out, log_dir=out, checkpoint=checkpoint, progress=False,
                         backend=backend, callback=after_update, stop=lambda: run.stopped)
            return
        # Rounds draw their targets with generators of their own (see _imitation_round), so the
        # source leaves the global stream alone, which a resumed run restores here.
        images = ImageSource(data, agent.prog.channels, agent.prog.image_size, seed=0) \
            if phase.kind in ("self_imitation", "distillation") else None
        agent.restore_random_state()
        with denormals_flushed():
            while not run.stopped:
                history = _imitation_round(agent, run, data, images, teacher)
                train = agent.config.train
                for metrics in history:
                    if log is not None and train.log_every and metrics["update"] % train.log_every == 0:
                        log.write("imitation", metrics)
                    after_update(metrics)
                # A round ends where an evaluation or checkpoint is due (PhaseRun.updates_this_round),
                # so they happen once, after its last update.
                report(agent, dict(history[-1]), run.stopped, held_out=held_out, log=log, log_dir=out,
                       checkpoint=checkpoint, table=None)


def _imitation_round(agent: "Spiral", run: PhaseRun, data: Any, images: ImageSource | None,
                     teacher: "Spiral | None" = None) -> list[dict[str, float]]:
    """The updates of one round of a supervised phase: one for sleep and imitation; a search on
    training targets and up to ``round_updates`` updates towards what it found for self-imitation
    (the agent's own search) and distillation (the ``teacher``'s).

    Every round draws from a random stream seeded by the update count, so a resumed run draws
    what an uninterrupted one would have."""
    phase, seed = run.phase, agent.learner.updates
    if phase.kind == "imitation":
        return agent.imitate(data, 1, progress=False)
    if phase.kind == "sleep":
        with training_time(agent):
            metrics = sleep_update(agent, torch.Generator().manual_seed(seed))
        return [{**time_record(agent), **metrics}]
    with training_time(agent):  # the search is part of the phase's training time
        generator = torch.Generator().manual_seed(seed)
        chosen = images.indices[torch.randint(len(images), (phase.targets,), generator=generator)]
        targets = images.images(chosen).to(agent.device)
        searcher = agent if teacher is None else teacher
        labels = search_labels(searcher, resized(targets, searcher.prog.image_size), phase.passes, seed, phase.search)
    return agent.imitate((targets, labels), run.updates_this_round(phase.round_updates), progress=False)
