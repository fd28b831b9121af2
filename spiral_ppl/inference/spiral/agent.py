r"""``Spiral``: a SPIRAL agent, its policy and critic, and how it decodes at inference.

A SPIRAL agent (Ganin et al. 2018) is a recurrent policy that writes a program one action at a
time while looking at the canvas, trained by reinforcement learning against a WGAN-GP critic
(``reward.kind = "critic"``) or the l2 distance to the target (``"l2"``, conditional agents
only). Once trained it inverts an image in one pass of ``steps`` renders; with a larger budget
it keeps the best of several passes. The class holds the agent's parts and hands each job to
the module that does it:

==========================  =================================================================
job                         module
==========================  =================================================================
the networks                :mod:`.policy`, :mod:`.decoders`, :mod:`.critic`
every hyper-parameter       :mod:`.config` (:class:`SpiralConfig`)
inference (an engine)       :mod:`~spiral_ppl.inference.spiral.engine`: :meth:`infer`, :attr:`guide`, :attr:`proposal`, :meth:`smc`
training                    :mod:`.training` (:meth:`fit`), :mod:`.imitation` (:meth:`imitate`),
                            :mod:`.recipe` (phases), :mod:`.episodes` / :mod:`.distributed`
files                       :mod:`.checkpoints`: :meth:`save`, :meth:`load`, :meth:`pretrained`
==========================  =================================================================

How it decodes at inference is one frozen value, :class:`Decoding`, saved with the agent.

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.spiral import SpiralConfig
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> config = SpiralConfig.small(a2c={"batch_size": 8}, reward={"kind": "l2"})
    >>> agent = sp.inference.Spiral(prog, config=config, device="cpu")
    >>> targets = prog.render({c.name: torch.randint(0, c.size, (20, 2)) for c in prog.action_space})
    >>> history = agent.fit(targets, steps=2, progress=False)
    >>> result = agent.infer(prog, targets[:3], sp.Budget(renders=6), seed=0)
    >>> result.renders.tolist(), result.curve.renders.tolist()  # 3 passes of 2 renders
    ([6, 6, 6], [2, 4, 6])

References: Ganin et al., ICML 2018; Mellor et al. 2019 (SPIRAL++); Mnih et al. 2016 (A2C);
Gulrajani et al. 2017 (WGAN-GP).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from spiral_ppl import checks
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, check_progress
from spiral_ppl.inference.randomness import set_random_state
from spiral_ppl.inference.result import Result
from spiral_ppl.inference.smc import INTERMEDIATE_TARGETS, SMC
from spiral_ppl.inference.smc_schedules import check_tempering, tempering_schedule
from spiral_ppl.inference.spiral import checkpoints, engine, imitation, recipe, training
from spiral_ppl.inference.spiral.config import SpiralConfig
from spiral_ppl.inference.spiral.critic import Critic
from spiral_ppl.inference.spiral.guide import SpiralGuide
from spiral_ppl.inference.spiral.policy import Policy, check_temperature
from spiral_ppl.inference.spiral.proposal import SpiralProposal
from spiral_ppl.inference.spiral.sources import ImageSource
from spiral_ppl.programs.base import Program, require_fixed_structure


@dataclass(frozen=True)
class Decoding:
    r"""How an agent decodes at inference; training always samples at temperature 1.

    :param temperature: passes, :attr:`Spiral.proposal` and :attr:`Spiral.guide` sample each
        component from :math:`\mathrm{softmax}(\ell / \tau)` of its logits :math:`\ell`; 1 is the
        policy as trained; below 1 concentrates on likelier values (lower l2 per pass, less
        diversity between passes).
    :param greedy_first: the first pass of every inference takes each component's most
        probable value (the limit :math:`\tau \to 0`); later passes sample.
    :param smc_intermediate: the intermediate targets of :meth:`Spiral.smc`: ``"model"`` or
        ``"proposal"`` (see :mod:`spiral_ppl.inference.smc`).
    :param smc_tempering: exponents of the partial canvases' likelihoods in :meth:`Spiral.smc`
        (``None``: 1 throughout; see :class:`~spiral_ppl.inference.SMC`).

    The shipped agents' decodings were chosen on validation targets by
    ``benchmarks/spiral_decoding.py``.
    """

    temperature: float = 1.0
    greedy_first: bool = False
    smc_intermediate: str = "model"
    smc_tempering: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if not isinstance(self.greedy_first, bool):
            raise TypeError(f"greedy_first must be True or False, got {self.greedy_first!r}")
        checks.choice("smc_intermediate", self.smc_intermediate, INTERMEDIATE_TARGETS)
        object.__setattr__(self, "smc_tempering", check_tempering(self.smc_tempering))

    def check_steps(self, steps: int) -> None:
        """Refuse a per-step tempering schedule whose length is not ``steps``."""
        if isinstance(self.smc_tempering, tuple):
            tempering_schedule(self.smc_tempering, steps)


DECODING_FIELDS = tuple(field.name for field in dataclasses.fields(Decoding))


class Spiral(Engine):
    """A SPIRAL agent for a program.

    :param prog: the program the agent writes (any :class:`~spiral_ppl.programs.Program`).
    :param conditional: the policy sees the target (reconstruction); otherwise it draws from
        noise and the critic compares its images with the data (generation).
    :param blind: the policy does not see intermediate canvases (one render per pass).
    :param config: every hyper-parameter (:class:`SpiralConfig`; the paper's by default).
    :param decoding: how it decodes at inference (:class:`Decoding`).
    :param device: where the networks and rollouts live (default: CUDA when present).
    :param max_batch: most episodes rolled out at once by :meth:`infer`.
    """

    name = "spiral"

    def __init__(self, prog: Program, conditional: bool = True, blind: bool = False, *,
                 config: SpiralConfig | None = None, decoding: Decoding | None = None,
                 device: torch.device | str | None = None, max_batch: int = 1024) -> None:
        if not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        require_fixed_structure(prog, "a SPIRAL agent (its policy acts one step at a time)")
        if isinstance(conditional, SpiralConfig):
            raise TypeError("the second argument of Spiral is conditional (true or false), got a SpiralConfig: "
                            "pass the configuration by name, Spiral(prog, config=config)")
        config = SpiralConfig() if config is None else config
        if not isinstance(config, SpiralConfig):
            raise TypeError(f"config must be a SpiralConfig, got {type(config).__name__}")
        if config.reward.kind == "l2" and not conditional:
            raise ValueError("reward.kind='l2' compares with a target, so it needs conditional=True; "
                             "an unconditional agent uses reward.kind='critic'")
        self.prog, self.conditional, self.blind = prog, checks.switch("conditional", conditional), \
            checks.switch("blind", blind)
        self.max_batch = checks.positive_int("max_batch", max_batch)
        self.device = _device(device)
        self.policy = Policy(prog.action_space, prog.channels, prog.image_size, conditional=self.conditional,
                             config=config.policy).to(self.device)
        self.critic = (Critic(prog.channels, prog.image_size, conditional=self.conditional, config=config.critic)
                       .to(self.device) if config.reward.kind == "critic" else None)
        self.learner = training.Learner(self, config)
        self.decoding = Decoding() if decoding is None else decoding
        self.train_seconds = 0.0  # wall-clock seconds spent training
        self.train_cpu_seconds = 0.0  # this process's CPU seconds spent training (all its threads)
        self._source_state: torch.Tensor | None = None  # the training images' sampler, to resume exactly
        self._resume_rng: dict[str, Any] | None = None
        if self.blind:
            self.name = "spiral-blind"

    def __setattr__(self, name: str, value: Any) -> None:
        if name in DECODING_FIELDS:  # would otherwise set an attribute nothing reads
            raise AttributeError(f"{name} is part of the agent's decoding: agent.decoding = "
                                 f"dataclasses.replace(agent.decoding, {name}=...), or agent.with_decoding({name}=...)")
        super().__setattr__(name, value)

    @property
    def config(self) -> SpiralConfig:
        """The hyper-parameters in force (:meth:`set_hyperparameters` changes them between fits)."""
        return self.learner.config

    @property
    def decoding(self) -> Decoding:
        """How :meth:`infer`, :attr:`guide`, :attr:`proposal` and :meth:`smc` decode (saved with the agent)."""
        return self._decoding

    @decoding.setter
    def decoding(self, value: Decoding) -> None:
        if not isinstance(value, Decoding):
            raise TypeError(f"decoding must be a Decoding, e.g. Decoding(temperature=0.5), got {type(value).__name__}")
        value.check_steps(self.prog.steps)
        self._decoding = value

    def with_decoding(self, **changes: Any) -> "Spiral":
        """This agent (the same networks, not a copy of them) decoding with ``changes``,
        e.g. ``agent.with_decoding(temperature=0.5).infer(...)``."""
        view = copy.copy(self)
        view.decoding = dataclasses.replace(self.decoding, **changes)
        return view

    @property
    def renders_per_pass(self) -> int:
        """Renders of one episode: every step's canvas, or only the last for a blind agent."""
        return 1 if self.blind else self.prog.steps

    def check_program(self, prog: Program) -> None:
        """Refuse a program whose action space, images or steps differ from the agent's."""
        if prog is self.prog:
            return
        differ = checkpoints.program_differences(self.prog, prog)
        if differ:
            raise ValueError(f"this agent was built for {self.prog!r}, which differs from {prog!r} in {differ}; "
                             "train (or load) an agent for this program")

    # -- inference: the engine ------------------------------------------------------------------

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        return engine.best_of_passes(self, prog, images, budget)

    def one_pass(self, targets: torch.Tensor) -> torch.Tensor:
        """Final canvases of one pass on ``targets`` (an unconditional agent draws as many
        samples), decoded as :meth:`infer`'s first pass, leaving the training's random streams alone."""
        return engine.one_pass(self, targets)

    def sample(self, n: int, *, seed: int | None = None) -> engine.Samples:
        """``n`` images painted by an unconditional agent, each from its own noise vector, and
        their programs: ``samples.images`` ``(n, C, H, W)``, ``samples.programs``
        ``{component: (n, steps)}`` (``prog.render(samples.programs)`` paints them again). Drawn
        at the decoding's temperature; ``seed`` makes them reproducible."""
        return engine.sample(self, n, seed)

    @property
    def guide(self) -> SpiralGuide:
        """The policy as a Pyro guide ``guide(image)`` over the sites ``step_{t}/{component}``."""
        return SpiralGuide(self)

    @property
    def proposal(self) -> SpiralProposal:
        """The policy as an SMC step proposal: ``sp.inference.SMC(agent.proposal)``."""
        return SpiralProposal(self, temperature=self.decoding.temperature)

    def smc(self, **options: Any) -> SMC:
        """SPIRAL-guided SMC: :class:`~spiral_ppl.inference.SMC` with :attr:`proposal` and the
        decoding's intermediate targets and tempering, unless ``options`` say otherwise."""
        return engine.guided_smc(self, **options)

    # -- training -------------------------------------------------------------------------------

    def fit(self, data: Any, steps: int | None = None, *, minutes: float | None = None, eval_data: Any = None,
            log_dir: str | Path | None = None, checkpoint: str | Path | None = None, progress: bool | None = None,
            backend: Any = "local", callback: Callable[[dict[str, float]], Any] | None = None
            ) -> list[dict[str, float]]:
        """Train on unlabelled target images: ``steps`` more A2C updates (:mod:`.training`), or
        ``minutes`` more minutes of training time by a recipe (:mod:`.recipe`).

        With ``minutes``, the recipe is the configuration's phases (``train.phases``), cut at
        ``minutes``, or, when it has none, the label-free default
        (:func:`~spiral_ppl.inference.spiral.recipe.default_phases`): sleep on the program's
        own prior samples, then self-imitation of the agent's best passes on ``data``. Either
        way the phases start where the agent stands now. Example::

            agent = sp.inference.Spiral(prog)
            agent.fit(images, minutes=5)
            result = agent.infer(prog, targets, sp.Budget(renders=prog.steps))

        :param data: target images: a tensor ``(N, C, H, W)`` in ``[0, 1]`` or a ``Dataset``
            of images or ``(image, label)`` tuples (e.g. :class:`spiral_ppl.data.MNIST`).
        :param steps: A2C updates of ``a2c.batch_size`` episodes each; give this or ``minutes``.
        :param minutes: training time, in minutes, of the recipe.
        :param eval_data: held-out targets for the evaluations every ``train.eval_every``
            updates; by default the last ``train.eval_size`` items of ``data`` are held out.
        :param log_dir: folder of ``train.csv``, ``eval.csv`` and sample grids.
        :param checkpoint: file written atomically every ``train.checkpoint_every`` updates and
            at the end; :meth:`load` resumes from it exactly.
        :param backend: ``"local"``, ``"ray"`` or an episode source such as
            :class:`~spiral_ppl.inference.spiral.RayEpisodes` (:mod:`.episodes`).
        :param callback: called with each update's metrics once it is logged and checkpointed.
        :returns: the metrics of every update of this call.
        """
        if (steps is None) == (minutes is None):
            raise ValueError(f"fit takes steps= (A2C updates) or minutes= (training time of the recipe), one of the "
                             f"two; got steps={steps!r}, minutes={minutes!r}")
        _check_run_options(log_dir=log_dir, checkpoint=checkpoint, progress=progress, callback=callback)
        if steps is not None:
            return training.fit(self, data, steps, eval_data=eval_data, log_dir=log_dir, checkpoint=checkpoint,
                                progress=progress, backend=backend, callback=callback)
        minutes = checks.positive_number("minutes", minutes)
        phases = self.config.train.phases or recipe.default_phases(minutes)
        if any(phase.program_steps not in (None, self.prog.steps) for phase in phases):
            raise ValueError("this configuration's recipe re-targets the agent to other numbers of steps, which "
                             "fit cannot do in place: run it with spiral_ppl.inference.spiral.recipe.run")
        history: list[dict[str, float]] = []
        deadline = self.train_seconds + 60.0 * minutes

        def collect(metrics: dict[str, float]) -> None:
            history.append(metrics)
            if callback is not None:
                callback(metrics)

        recipe.run(self, data, log_dir, eval_data=eval_data, phases=phases, checkpoint=checkpoint,
                   origin=(self.learner.updates, self.train_seconds), backend=backend, progress=progress,
                   stop=lambda agent: agent.train_seconds >= deadline, callback=collect)
        return history

    def imitate(self, data: Any, steps: int, *, expert: imitation.Expert | None = None,
                progress: bool | None = None) -> list[dict[str, float]]:
        """Supervised updates towards ground-truth programs: behaviour cloning, or DAgger with an
        ``expert`` (:mod:`.imitation`).

        :param data: a ``Dataset`` of ``(image, {name: LongTensor[T]})`` items, such as
            :class:`spiral_ppl.data.MujocoScenes`, or a pair ``(images, {name: LongTensor[N, T]})``.
        :param expert: ``expert(state, programs) -> {name: LongTensor[B]}``, such as
            :meth:`spiral_ppl.data.MujocoScenes.expert`; ``None``: behaviour cloning.
        """
        _check_run_options(progress=progress)
        return imitation.imitate(self, data, steps, expert=expert, progress=progress)

    def evaluate(self, targets: torch.Tensor, log_dir: str | Path | None = None,
                 update: int | None = None) -> dict[str, float]:
        """One pass on ``targets``: ``eval_l2`` and ``blank_l2`` (conditional), or ``eval_ink``
        and ``data_ink`` (unconditional); a sample grid in ``log_dir`` when given."""
        _check_run_options(log_dir=log_dir)
        if update is not None:
            checks.non_negative_int("update", update, hint="the update count, in the sample grid's file name")
        return training.evaluate(self, targets, log_dir, update)

    def set_hyperparameters(self, changes: dict[str, Any]) -> None:
        """Change settings that leave the networks alone (``{"a2c.lr": 3e-4}``) between fits,
        keeping the optimisers' state; saved with the agent."""
        self.learner.set_hyperparameters(changes)

    def retargeted(self, prog: Program) -> "Spiral":
        """A copy of this agent for ``prog``, a program with the same actions and images but
        another number of steps. The policy steps an LSTM, so its weights serve any number of
        steps: the copy's first steps are this agent's. It keeps the critic, the decoding, the
        update count and the training time; its optimisers start afresh."""
        if not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        differ = checkpoints.program_differences(self.prog, prog, ("action_space", "channels", "image_size"))
        if differ:
            raise ValueError(f"retargeted changes the number of steps only; {prog!r} differs from this agent's "
                             f"{self.prog!r} in {differ}: train (or load) an agent for that program")
        if isinstance(self.decoding.smc_tempering, tuple) and prog.steps != self.prog.steps:
            raise ValueError(f"this agent's decoding.smc_tempering has one exponent per step of its {self.prog.steps} "
                             f"steps; set it to a float (or None) before retargeting to {prog.steps} steps")
        copy_ = Spiral(prog, self.conditional, self.blind, config=self.config, decoding=self.decoding,
                       device=self.device, max_batch=self.max_batch)
        copy_.policy.load_state_dict(self.policy.state_dict())
        if self.critic is not None:
            copy_.critic.load_state_dict(self.critic.state_dict())
        copy_.learner.updates, copy_.train_seconds = self.learner.updates, self.train_seconds
        copy_.train_cpu_seconds = self.train_cpu_seconds
        return copy_

    def restore_training_streams(self, images: ImageSource) -> None:
        """Put the random streams where the checkpoint this agent was loaded from left them."""
        if self._source_state is not None:
            images.generator.set_state(self._source_state)
        self.restore_random_state()

    def restore_random_state(self) -> None:
        """Put the global random streams where the checkpoint this agent was loaded from left
        them (once: later calls leave them alone)."""
        if self._resume_rng is not None:
            set_random_state(self._resume_rng)
            self._resume_rng = None

    def remember_training_streams(self, images: ImageSource) -> None:
        """Note where the training images' sampler stands, for the next checkpoint."""
        self._source_state = images.generator.get_state()

    # -- files ----------------------------------------------------------------------------------

    def save(self, path: str | Path, *, training_state: bool = True, keep: int = 1) -> None:
        """Write the agent atomically, with its training state (optimisers, replay buffer, random
        streams, update count) unless ``training_state=False`` (the weights only, for inference);
        ``keep`` > 1 keeps that many of the newest files (see :func:`.checkpoints.save`)."""
        checks.switch("training_state", training_state)
        checkpoints.save(self, checks.path("path", path), training_state=training_state, keep=keep)

    @classmethod
    def load(cls, path: str | Path, prog: Program | None = None, *,
             device: torch.device | str | None = None) -> "Spiral":
        """Read an agent written by :meth:`save`; :meth:`fit` then resumes exactly where it stopped.

        :param prog: the program to act on; required unless the checkpoint can rebuild its own
            (a brush or MuJoCo program, whose renderer it describes, or a program made from a
            reference ``"module:factory"``, see :func:`~spiral_ppl.programs.resolve_program`).
            It must match the checkpoint's action space, images and steps.
        """
        path = checks.path("path", path)
        checks.device("device", device)  # before reading a large file
        return cls.from_checkpoint(checkpoints.read(path), prog, device=device, source=path)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], prog: Program | None = None, *,
                        device: torch.device | str | None = None, source: str | Path = "the checkpoint") -> "Spiral":
        """The agent a checkpoint's content describes (what :func:`.checkpoints.read` returns), as
        :meth:`load` builds it; ``source`` names the file in errors."""
        prog = checkpoints.check_recorded_program(state, prog, source)
        try:
            config, decoding = SpiralConfig.from_dict(state["config"]), Decoding(**state["decoding"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: its settings are not valid here: {error}") from None
        agent = cls(prog, conditional=state["conditional"], blind=state["blind"], config=config, decoding=decoding,
                    device=device)
        try:
            agent.policy.load_state_dict(state["policy"])
            if agent.critic is not None:
                agent.critic.load_state_dict(state["critic"])
            if state["learner"] is not None:
                agent.learner.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"{source}: the weights do not fit the agent they describe: {str(error)[:300]}") from None
        agent.train_seconds = float(state["train_seconds"])
        agent.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))  # older checkpoints lack it
        agent._source_state, agent._resume_rng = state["source_state"], state["rng"]
        return agent

    @staticmethod
    def pretrained_names() -> list[str]:
        """Agents shipped with the package (each with a model card, ``<name>.md``)."""
        return checkpoints.pretrained_names()

    @classmethod
    def pretrained(cls, name: str, *, device: torch.device | str | None = None) -> "Spiral":
        """A pretrained agent shipped with the package, with the program it was trained on.

        Example::

            agent = Spiral.pretrained("mnist-recon-cpu")
            result = agent.infer(agent.prog, digits, sp.Budget(renders=agent.prog.steps))
        """
        with checkpoints.pretrained_path(name) as path:
            return cls.load(path, device=device)

    @classmethod
    def named(cls, source: str | Path, prog: Program | None = None, *, device: torch.device | str | None = None,
              argument: str = "agent") -> "Spiral":
        """A pretrained agent by name, or an agent file written by :meth:`save` (or a training
        run's ``checkpoint.pt``), which ``prog`` is given to as :meth:`load` says; ``argument``
        names the setting that gave ``source`` in errors."""
        names = cls.pretrained_names()
        if isinstance(source, str) and source in names:
            if prog is not None:
                raise ValueError(f"{argument} {source!r}: the pretrained agent brings its own program; give "
                                 "none, or the file of an agent trained on yours")
            return cls.pretrained(source, device=device)
        if not isinstance(source, (str, Path)):
            raise TypeError(f"{argument} must be a pretrained agent's name or an agent file's path, "
                            f"got {type(source).__name__}")
        if Path(source).is_dir():
            raise ValueError(f"{argument} {str(source)!r} is a folder; give the agent file in it (agent.pt or "
                             f"checkpoint.pt, as training writes them) or a pretrained agent {names}")
        if not Path(source).is_file():
            raise ValueError(f"{argument} {str(source)!r} is neither a pretrained agent {names} nor an agent file")
        try:
            return cls.load(source, prog, device=device)
        except ValueError as error:
            raise ValueError(f"{argument}: {error}") from None

    @staticmethod
    def model_card(name: str) -> str:
        """The model card of a pretrained agent: data, recipe, device and final l2."""
        return checkpoints.model_card(name)


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return checks.device("device", device)


def _check_run_options(*, log_dir: Any = None, checkpoint: Any = None, progress: Any = None,
                       callback: Any = None) -> None:
    """The options of a training call, checked before any work rather than at the first update."""
    for name, value in (("log_dir", log_dir), ("checkpoint", checkpoint)):
        if value is not None:
            checks.path(name, value)
    check_progress(progress)
    checks.optional_callable("callback", callback, signature="callback(metrics)")
