r"""``Spiral``: a SPIRAL agent as an inference engine, a trainer and a Pyro guide.

A SPIRAL agent (Ganin et al. 2018) is a recurrent policy that writes a program one action
at a time while looking at the canvas, trained by reinforcement learning: A2C against a
WGAN-GP critic (``reward="critic"``) or against the l2 distance to the target
(``reward="l2"``, conditional agents only). Once trained it inverts an image in one pass
of ``steps`` renders; with a larger budget it keeps the best of several passes. Its policy
is also a Pyro guide over the program's sites (:attr:`Spiral.guide`), so importance
sampling can use it as a proposal, and a step proposal for SMC (:attr:`Spiral.proposal`).

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> agent = sp.inference.Spiral(prog, reward="l2", config=sp.inference.SpiralConfig.small(batch_size=8))
    >>> targets = prog.render({c.name: torch.randint(0, c.size, (20, 2)) for c in prog.action_space})
    >>> history = agent.fit(targets, steps=2, progress=False)
    >>> result = agent.infer(prog, targets[:3], sp.Budget(renders=6), seed=0)
    >>> result.renders.tolist(), result.curve.renders.tolist()  # 3 passes of 2 renders
    ([6, 6, 6], [2, 4, 6])

References: Ganin et al., ICML 2018; Mellor et al. 2019 (SPIRAL++); Mnih et al. 2016 (A2C);
Gulrajani et al. 2017 (WGAN-GP).
"""

from __future__ import annotations

import dataclasses
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, hide_progress
from spiral_ppl.inference.moves import check_choice
from spiral_ppl.inference.randomness import random_state, set_random_state
from spiral_ppl.inference.result import BestSoFar, Curve, Result
from spiral_ppl.inference.smc import INTERMEDIATE_TARGETS, SMC, check_tempering, tempering_schedule
from spiral_ppl.inference.spiral.critic import Critic
from spiral_ppl.inference.spiral.distributed import RayBackend
from spiral_ppl.inference.spiral.guide import SpiralGuide
from spiral_ppl.inference.spiral.learner import Expert, Learner, SpiralConfig, denormals_flushed
from spiral_ppl.inference.spiral.logs import TrainingLog
from spiral_ppl.inference.spiral.policy import Policy, check_temperature, widen
from spiral_ppl.inference.spiral.proposal import SpiralProposal
from spiral_ppl.inference.spiral.rollout import Episode, most_probable, rollout
from spiral_ppl.inference.spiral.sources import ImageSource, hold_out
from spiral_ppl.io import atomic_path
from spiral_ppl.programs.base import Program, mean_squared_error
from spiral_ppl.renderers.base import validate_actions

#: Format tag of checkpoint files.
CHECKPOINT_FORMAT = "spiral_ppl.Spiral/1"
REWARDS = ("critic", "l2")


def describe_program(prog: Program) -> dict[str, Any]:
    """What a checkpoint records of its program, to rebuild it or to check another against it."""
    from spiral_ppl.io import renderer_config
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
    }


def program_differences(first: Program, second: Program,
                        keys: tuple[str, ...] = ("action_space", "channels", "image_size", "steps")) -> list[str]:
    """Which of ``keys`` of :func:`describe_program` differ between two programs."""
    mine, theirs = describe_program(first), describe_program(second)
    return [key for key in keys if mine[key] != theirs[key]]


class Spiral(Engine):
    r"""A SPIRAL agent for a program.

    :param prog: the program the agent writes (any :class:`~spiral_ppl.programs.Program`).
    :param conditional: the policy sees the target (reconstruction); otherwise it draws from
        noise and the critic compares its images with the data (generation).
    :param reward: ``"critic"`` (WGAN-GP critic's score) or ``"l2"`` (minus the mean squared
        error to the target; conditional agents only).
    :param blind: the policy does not see intermediate canvases.
    :param device: where the networks and rollouts live (default: CUDA when present).
    :param config: hyper-parameters (:class:`SpiralConfig`; the paper's by default).
    :param max_batch: most episodes rolled out at once by :meth:`infer`.
    :param temperature: how :meth:`infer`, :attr:`proposal` and :attr:`guide` sample each
        component: from :math:`\mathrm{softmax}(\ell / \tau)` of its logits :math:`\ell`.
        ``1`` is the policy as trained (the paper); below 1 it concentrates on the likelier
        values, which usually lowers the l2 of a pass at the cost of diversity between passes.
    :param greedy_first: the first pass of every inference takes each component's most
        probable value (the limit :math:`\tau \to 0`); later passes sample. One pass is then
        the policy's greedy reconstruction, and best-of-``N`` also includes it.

    :param smc_intermediate: the intermediate targets of :meth:`smc`, the SMC guided by this
        policy: ``"model"`` or ``"proposal"`` (see :mod:`spiral_ppl.inference.smc`).
    :param smc_tempering: the exponents of the partial canvases' likelihoods in :meth:`smc`
        (``None``: 1 throughout; see :class:`~spiral_ppl.inference.SMC`).

    Training always samples at temperature 1 (A2C and the imitation losses are on-policy);
    ``temperature``, ``greedy_first`` and the SMC options only change inference
    (:meth:`infer`, :meth:`one_pass`, :meth:`evaluate`, :attr:`proposal`, :attr:`guide`,
    :meth:`smc`) and are saved with the agent, so a pretrained agent comes with the decoding
    its model card measured (``benchmarks/spiral_decoding.py`` chooses it on validation
    targets).
    """

    name = "spiral"

    def __init__(
        self,
        prog: Program,
        conditional: bool = True,
        reward: str = "critic",
        blind: bool = False,
        *,
        device: torch.device | str | None = None,
        config: SpiralConfig | None = None,
        max_batch: int = 1024,
        temperature: float = 1.0,
        greedy_first: bool = False,
        smc_intermediate: str = "model",
        smc_tempering: float | tuple[float, ...] | None = None,
    ) -> None:
        if not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if reward == "l2" and not conditional:
            raise ValueError("reward='l2' compares with a target, so it needs conditional=True; "
                             "an unconditional agent uses reward='critic'")
        config = SpiralConfig() if config is None else config
        if not isinstance(config, SpiralConfig):
            raise TypeError(f"config must be a SpiralConfig, got {type(config).__name__}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        self.prog, self.conditional, self.reward, self.blind = prog, bool(conditional), reward, bool(blind)
        self.config, self.max_batch = config, max_batch
        self.temperature, self.greedy_first = temperature, greedy_first
        self.smc_intermediate, self.smc_tempering = smc_intermediate, smc_tempering
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.policy = Policy(prog.action_space, prog.channels, prog.image_size,
                             conditional=self.conditional, config=config).to(self.device)
        self.critic = (Critic(prog.channels, prog.image_size, conditional=self.conditional, config=config)
                       .to(self.device) if reward == "critic" else None)
        self.learner = Learner(prog, self.policy, self.critic, config, blind=self.blind)
        self.train_seconds = 0.0
        self._source_state: torch.Tensor | None = None
        self._resume_rng: dict[str, Any] | None = None
        if blind:
            self.name = "spiral-blind"

    @property
    def temperature(self) -> float:
        """Sampling temperature of :meth:`infer`'s passes (see the class docstring)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)

    @property
    def greedy_first(self) -> bool:
        """Whether the first pass of every inference is greedy (see the class docstring)."""
        return self._greedy_first

    @greedy_first.setter
    def greedy_first(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"greedy_first must be True or False, got {value!r}")
        self._greedy_first = value

    @property
    def smc_intermediate(self) -> str:
        """The intermediate targets of :meth:`smc` (see the class docstring)."""
        return self._smc_intermediate

    @smc_intermediate.setter
    def smc_intermediate(self, value: str) -> None:
        self._smc_intermediate = check_choice("smc_intermediate", value, INTERMEDIATE_TARGETS)

    @property
    def smc_tempering(self) -> float | tuple[float, ...] | None:
        """The likelihood tempering of :meth:`smc` (see the class docstring)."""
        return self._smc_tempering

    @smc_tempering.setter
    def smc_tempering(self, value: float | tuple[float, ...] | None) -> None:
        self._smc_tempering = check_tempering(value)
        if isinstance(self._smc_tempering, tuple):
            tempering_schedule(self._smc_tempering, self.prog.steps)  # one exponent per step

    def _decode(self, prog: Program, targets: torch.Tensor, greedy: bool) -> Episode:
        """One pass of ``prog`` on each of ``targets``: greedy, or sampled at :attr:`temperature`."""
        decoding = {"choose": most_probable} if greedy else {"temperature": self.temperature}
        with self.learner.autocast():
            return rollout(self.policy, prog, targets.shape[0], targets if self.conditional else None,
                           blind=self.blind, **decoding)

    @property
    def renders_per_pass(self) -> int:
        """Renders of one episode: every step's canvas, or only the last for a blind agent."""
        return 1 if self.blind else self.prog.steps

    @property
    def guide(self) -> SpiralGuide:
        """The policy at :attr:`temperature` as a Pyro guide ``guide(image)`` over the sites ``step_{t}/{component}``
        (see :class:`SpiralGuide`)."""
        return SpiralGuide(self)

    @property
    def proposal(self) -> SpiralProposal:
        """The policy at :attr:`temperature` as an SMC step proposal: ``sp.inference.SMC(agent.proposal)``
        (:meth:`smc` also sets the intermediate targets chosen for this agent)."""
        return SpiralProposal(self, temperature=self.temperature)

    def smc(self, **options: Any) -> SMC:
        """SPIRAL-guided SMC: :class:`~spiral_ppl.inference.SMC` with :attr:`proposal`, and the
        intermediate targets and tempering saved with the agent (:attr:`smc_intermediate`,
        :attr:`smc_tempering`) unless ``options`` say otherwise.

        >>> import spiral_ppl as sp
        >>> agent = sp.inference.Spiral(sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4),
        ...                                                      steps=2), reward="l2", device="cpu")
        >>> agent.smc_intermediate, agent.smc_tempering = "proposal", 0.01
        >>> engine = agent.smc(ess_threshold=1.0)
        >>> engine.name, engine.intermediate, engine.tempering, engine.ess_threshold
        ('smc-guide', 'proposal', 0.01, 1.0)
        """
        options = {"intermediate": self.smc_intermediate, "tempering": self.smc_tempering, **options}
        return SMC(self.proposal, **options)

    # -- inference ---------------------------------------------------------------------------

    def check_program(self, prog: Program) -> None:
        """Refuse a program whose action space, images or steps differ from the agent's."""
        if prog is self.prog:
            return
        differ = program_differences(self.prog, prog)
        if differ:
            raise ValueError(
                f"this agent was built for {self.prog!r}, which differs from {prog!r} in {differ}; "
                "train (or load) an agent for this program"
            )

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        self.check_program(prog)
        passes = budget.renders // self.renders_per_pass
        if passes < 1:
            raise ValueError(
                f"one pass of this agent costs {self.renders_per_pass} renders per target; "
                f"the budget of {budget.renders} is smaller: give sp.Budget(renders={self.renders_per_pass}) or more"
            )
        targets = images.to(self.device)
        count = targets.shape[0]
        per_rollout = max(1, self.max_batch // count)
        # Rollouts of (repeats, greedy): the greedy first pass alone, then the sampled passes
        # in batches of at most max_batch episodes.
        chunks = [(1, True)] if self.greedy_first else []
        sampled = passes - len(chunks)
        chunks += [(min(per_rollout, sampled - start), False) for start in range(0, sampled, per_rollout)]
        sample_l2, best = [], BestSoFar(count, self.device)
        for repeats, greedy in chunks:
            episode = self._decode(prog, targets.repeat(repeats, 1, 1, 1), greedy)
            final = episode.final.float().view(repeats, count, *targets.shape[1:])
            l2 = mean_squared_error(final, targets)  # (repeats, count)
            sample_l2.append(l2)
            best.update(l2, final, {name: value.view(repeats, count, -1) for name, value in episode.actions.items()})
        home = images.device
        return Result(
            images=best.images.to(home),
            actions={k: v.to(home) for k, v in best.actions.items()},
            l2=best.l2.to(home),
            renders=torch.zeros(count, dtype=torch.long),
            seconds=0.0,
            curve=Curve.from_samples(torch.cat(sample_l2).cpu(), renders_per_sample=self.renders_per_pass),
        )

    # -- training ----------------------------------------------------------------------------

    def fit(
        self,
        data: Any,
        steps: int,
        *,
        eval_data: Any = None,
        eval_size: int = 64,
        eval_every: int = 0,
        log_dir: str | Path | None = None,
        log_every: int = 10,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 0,
        progress: bool | None = None,
        backend: "str | RayBackend" = "local",
        callback: Callable[[dict[str, float]], Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train for ``steps`` more updates of ``config.batch_size`` episodes each.

        :param data: target images: a tensor ``(N, C, H, W)`` in ``[0, 1]`` or a ``Dataset``
            of images or ``(image, label)`` tuples (e.g. :class:`spiral_ppl.data.MNIST`).
        :param eval_data: held-out targets for the evaluations; by default the last
            ``eval_size`` items of ``data`` are held out of training.
        :param eval_every: evaluate every this many updates and at the end (0: never):
            mean l2 of one pass on the held-out targets against a blank canvas (conditional),
            or mean ink against the data's (unconditional), plus a PNG grid of samples.
        :param log_dir: folder of ``train.csv``, ``eval.csv``, sample grids and, when
            TensorBoard is installed, event files.
        :param checkpoint: file written atomically every ``checkpoint_every`` updates and at
            the end; :meth:`load` resumes from it exactly.
        :param backend: ``"local"`` (roll out in this process), ``"ray"`` or a
            :class:`~spiral_ppl.inference.spiral.RayBackend` (rollout workers on Ray,
            episodes corrected for policy lag by V-trace; see
            :mod:`~spiral_ppl.inference.spiral.distributed`).
        :param callback: called with each update's metrics once it is logged, evaluated and
            checkpointed (for reporting to a tuner, or watching a run).
        :returns: the metrics of every update of this call.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (updates to run), got {steps!r}")
        for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every),
                            ("log_every", log_every), ("eval_size", eval_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        prog = self.prog
        training, held_out = None, None
        if eval_data is not None or eval_every:
            training, held_out = hold_out(data, eval_data, eval_size, prog.channels, prog.image_size)
        source = ImageSource(data, prog.channels, prog.image_size, indices=training)
        if self._source_state is not None:
            source.generator.set_state(self._source_state)
        if self._resume_rng is not None:
            set_random_state(self._resume_rng)
            self._resume_rng = None
        distributed = RayBackend.resolve(backend)
        log = TrainingLog(log_dir) if log_dir is not None else None
        history: list[dict[str, float]] = []
        episode_steps = self.config.batch_size * prog.steps
        try:
            if distributed is not None:
                distributed.start(self, source)
            with denormals_flushed(), tqdm(total=steps, desc=self.name, unit="update",
                                           disable=hide_progress(progress)) as bar:
                for _ in range(steps):
                    started = time.perf_counter()
                    if distributed is None:
                        targets = source.batch(self.config.batch_size).to(self.device) if self.conditional else None
                        metrics = self.learner.update(targets, source.batch)
                    else:
                        metrics = distributed.update()
                    self._source_state = source.generator.get_state()
                    elapsed = time.perf_counter() - started
                    self.train_seconds += elapsed
                    update = self.learner.updates
                    metrics = {"update": update, "seconds": self.train_seconds,
                               "agent_steps_per_second": episode_steps / elapsed, **metrics}
                    history.append(metrics)
                    bar.update(1)
                    bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("l2", "return") if math.isfinite(metrics[k])})
                    if log is not None and log_every and update % log_every == 0:
                        log.write("train", metrics)
                    last = len(history) == steps
                    if held_out is not None and eval_every and (update % eval_every == 0 or last):
                        evaluation = self.evaluate(held_out, source, log_dir, update)
                        history[-1].update(evaluation)
                        if log is not None:
                            log.write("eval", {"update": update, "seconds": self.train_seconds, **evaluation})
                    if checkpoint is not None and ((checkpoint_every and update % checkpoint_every == 0) or last):
                        self.save(checkpoint)
                    if callback is not None:
                        callback(history[-1])
        finally:
            if distributed is not None:
                distributed.close()
            if log is not None:
                log.close()
        return history

    def set_hyperparameters(self, **changes: Any) -> None:
        """Change hyper-parameters that leave the networks alone (learning rates, costs, reward
        scale, ...) between calls to :meth:`fit`, keeping the optimisers' state; saved with the agent."""
        self.learner.set_hyperparameters(**changes)
        self.config = self.learner.config

    def widened(self, policy_channels: int) -> "Spiral":
        """A copy of this agent whose policy has ``policy_channels`` image-feature channels and
        acts exactly as this one does, to go on training with more capacity.

        The new channels start with zero weight into the old units
        (:func:`~spiral_ppl.inference.spiral.policy.widen`), so one pass, best-of-N and the
        guided SMC give the same results until the copy is trained. The copy keeps the
        critic, the decoding options, the update count and the training time; its optimisers
        start afresh (their moments have the old shapes).

        Example::

            agent = Spiral.pretrained("mnist-recon-cpu").widened(32)
            agent.imitate((digits, programs), 100)  # e.g. self-imitation, as the recipe does
        """
        if isinstance(policy_channels, bool) or not isinstance(policy_channels, int) \
                or policy_channels < self.config.policy_channels:
            raise ValueError(f"policy_channels must be an int of at least the current "
                             f"{self.config.policy_channels}, got {policy_channels!r}")
        wide = self._sibling(self.prog, dataclasses.replace(self.config, policy_channels=policy_channels))
        widen(self.policy, wide.policy)
        return wide

    def retargeted(self, prog: Program) -> "Spiral":
        """A copy of this agent for ``prog``, a program with the same actions and images but
        another number of steps, such as more strokes.

        The policy steps an LSTM, so its weights serve any number of steps unchanged: the
        copy's first steps are this agent's. Whether the rest helps depends on training; the
        shipped MNIST agent, trained on 6 strokes, overdrew with 10 until self-imitation
        taught it to use them (its model card). The copy keeps the critic, the decoding
        options, the update count and the training time; its optimisers start afresh.

        Example::

            agent = Spiral.pretrained("mnist-recon-cpu")
            longer = agent.retargeted(sp.programs.PaintProgram(agent.prog.renderer, steps=20))
        """
        if not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        differ = program_differences(self.prog, prog, ("action_space", "channels", "image_size"))
        if differ:
            raise ValueError(f"retargeted changes the number of steps only; {prog!r} differs from this agent's "
                             f"{self.prog!r} in {differ}: train (or load) an agent for that program")
        if isinstance(self.smc_tempering, tuple) and prog.steps != self.prog.steps:
            raise ValueError(f"this agent's smc_tempering has one exponent per step of its {self.prog.steps} "
                             f"steps; set agent.smc_tempering to a float (or None) before retargeting to "
                             f"{prog.steps} steps")
        copy = self._sibling(prog, self.config)
        copy.policy.load_state_dict(self.policy.state_dict())
        return copy

    def _sibling(self, prog: Program, config: SpiralConfig) -> "Spiral":
        """A new agent with this one's options, critic, update count and training time."""
        sibling = Spiral(prog, conditional=self.conditional, reward=self.reward, blind=self.blind,
                         device=self.device, config=config, max_batch=self.max_batch, temperature=self.temperature,
                         greedy_first=self.greedy_first, smc_intermediate=self.smc_intermediate,
                         smc_tempering=self.smc_tempering)
        if self.critic is not None:
            sibling.critic.load_state_dict(self.critic.state_dict())
        sibling.learner.updates, sibling.train_seconds = self.learner.updates, self.train_seconds
        return sibling

    def imitate(self, data: Any, steps: int, *, expert: Expert | None = None,
                progress: bool | None = None) -> list[dict[str, float]]:
        """Warm-start the policy on ground-truth programs by behaviour cloning, before :meth:`fit`.

        Where programs come with their images (the procedural MUJOCO SCENES do), the policy
        can first learn to imitate them, as inference compilation does (Le, Baydin and Wood,
        AISTATS 2017), and then be refined by reinforcement learning, which needs no programs.

        Behaviour cloning only shows the policy the demonstrations' canvases. Pass an
        ``expert`` to train on the policy's own episodes instead, each state labelled with
        the expert's next action from there (DAgger; see :meth:`Learner.imitate`), so that
        the policy is taught how to go on from its own mistakes and when to stop. It pays
        off once the policy is accurate enough that the expert's corrections are reachable:
        on the CPU-sized scenes agent it was not (benchmarks/RESULTS.md, issue 8).

        :param data: a ``Dataset`` of ``(image, {name: LongTensor[T]})`` items, such as
            :class:`spiral_ppl.data.MujocoScenes`, or a pair ``(images, {name: LongTensor[N, T]})``.
        :param steps: supervised updates of ``config.batch_size`` programs each.
        :param expert: ``expert(state, programs) -> {name: LongTensor[B]}``, such as
            :meth:`spiral_ppl.data.MujocoScenes.expert`; ``None``: behaviour cloning.
        :returns: the loss of every update.
        """
        if expert is not None and not callable(expert):
            raise TypeError(f"expert must be callable as expert(state, programs), got {type(expert).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (updates to run), got {steps!r}")
        if isinstance(data, tuple) and len(data) == 2:
            images, programs = data
            count = images.shape[0]

            def batch(index: torch.Tensor):
                return images[index], {name: value[index] for name, value in programs.items()}
        elif isinstance(data, torch.utils.data.Dataset):
            if not holds_programs(data):
                raise TypeError(
                    "data must be a Dataset of (image, {component: LongTensor[T]}) items, as MujocoScenes gives; "
                    f"this {type(data).__name__} has no programs to imitate (its items are images or (image, label))"
                )
            count = len(data)

            def batch(index: torch.Tensor):
                items = [data[int(i)] for i in index]
                return (torch.stack([item[0] for item in items]),
                        {name: torch.stack([item[1][name] for item in items]) for name in items[0][1]})
        else:
            raise TypeError("data must be a Dataset of (image, actions) items or a pair (images, actions)")
        history = []
        with denormals_flushed():
            for _ in tqdm(range(steps), desc=f"{self.name} imitation", unit="update",
                          disable=hide_progress(progress)):
                started = time.perf_counter()
                batch_images, batch_programs = batch(torch.randint(count, (self.config.batch_size,)))
                validate_actions(self.prog.action_space, batch_programs, ndim=2)
                targets = self.prog.check_images(batch_images.to(self.device), name="data images")
                demonstrations = {name: value.to(self.device) for name, value in batch_programs.items()}
                metrics = self.learner.imitate(targets, demonstrations, expert)
                self.train_seconds += time.perf_counter() - started
                history.append({"update": self.learner.updates, "seconds": self.train_seconds, **metrics})
        return history

    def one_pass(self, targets: torch.Tensor) -> torch.Tensor:
        """Final canvases of one pass on ``targets`` (an unconditional agent draws as many
        samples), decoded as :meth:`infer`'s first pass, leaving the training's random streams
        as they were."""
        targets = targets.to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
            episode = self._decode(self.prog, targets, greedy=self.greedy_first)
        return episode.final.float()

    def evaluate(self, targets: torch.Tensor, source: ImageSource | None = None, log_dir: str | Path | None = None,
                 update: int | None = None) -> dict[str, float]:
        """One pass on ``targets`` (without disturbing the training's random streams).

        Conditional agents: ``eval_l2`` (mean l2 of the reconstructions) and ``blank_l2``
        (of an empty canvas). Unconditional: ``eval_ink`` of samples and ``data_ink``.
        Writes ``samples_{update}.png`` into ``log_dir`` when given.
        """
        from spiral_ppl.plots import plt, reconstruction_grid

        targets = targets.to(self.device)
        images = self.one_pass(targets)
        if self.conditional:
            empty = self.learner.empty_canvas().expand_as(targets)
            metrics = {"eval_l2": float(mean_squared_error(images, targets).mean()),
                       "blank_l2": float(mean_squared_error(empty, targets).mean())}
        else:
            metrics = {"eval_ink": float(images.mean()), "data_ink": float(targets.mean())}
        if log_dir is not None:
            name = "reconstruction" if self.conditional else "sample"
            figure = reconstruction_grid(targets[:8].cpu(), {name: images[:8].cpu()},
                                         Path(log_dir) / f"samples_{update if update is not None else 'eval'}.png")
            plt.close(figure)
        return metrics

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, path: str | Path, *, training_state: bool = True) -> None:
        """Write the agent atomically, with its training state unless ``training_state=False``.

        The training state (optimisers, replay buffer, random states, update counter) lets
        :meth:`fit` resume exactly; without it the file holds the weights only (a smaller
        file for inference; training after loading it starts fresh optimisers).
        """
        state = {
            "format": CHECKPOINT_FORMAT,
            "program": describe_program(self.prog),
            "conditional": self.conditional,
            "reward": self.reward,
            "blind": self.blind,
            "config": self.config.to_dict(),
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "learner": self.learner.state_dict() if training_state else None,
            "train_seconds": self.train_seconds,
            "temperature": self.temperature,
            "greedy_first": self.greedy_first,
            "smc_intermediate": self.smc_intermediate,
            "smc_tempering": self.smc_tempering,
            "source_state": self._source_state if training_state else None,
            "rng": random_state() if training_state else None,
        }
        with atomic_path(path) as temporary:
            torch.save(state, temporary)

    @staticmethod
    def pretrained_names() -> list[str]:
        """Agents shipped with the package (see each one's model card, ``<name>.md``)."""
        folder = resources.files("spiral_ppl") / "pretrained"
        return sorted(entry.name[: -len(".pt")] for entry in folder.iterdir() if entry.name.endswith(".pt"))

    @classmethod
    def pretrained(cls, name: str, *, device: torch.device | str | None = None) -> "Spiral":
        """A pretrained agent shipped with the package, with the program it was trained on.

        Example::

            agent = Spiral.pretrained("mnist-recon-cpu")
            result = agent.infer(agent.prog, digits, sp.Budget(renders=agent.prog.steps))
        """
        names = cls.pretrained_names()
        if name not in names:
            raise ValueError(f"no pretrained agent {name!r}; available: {names}")
        with resources.as_file(resources.files("spiral_ppl") / "pretrained" / f"{name}.pt") as path:
            return cls.load(path, device=device)

    @staticmethod
    def model_card(name: str) -> str:
        """The model card of a pretrained agent: data, training, device and final l2."""
        card = resources.files("spiral_ppl") / "pretrained" / f"{name}.md"
        if not card.is_file():
            raise ValueError(f"no model card for {name!r}; pretrained agents: {Spiral.pretrained_names()}")
        return card.read_text()

    @classmethod
    def load(
        cls, path: str | Path, prog: Program | None = None, *, device: torch.device | str | None = None
    ) -> "Spiral":
        """Read an agent written by :meth:`save`; :meth:`fit` then resumes exactly where it stopped.

        :param prog: the program to act on; required unless the checkpoint's program is a
            brush program (whose description it holds). It must match the checkpoint's
            action space, images and steps.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no SPIRAL checkpoint at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ValueError(
                f"{path} is not a readable SPIRAL checkpoint (corrupt, truncated or another kind of file): "
                f"{type(error).__name__}: {str(error)[:200]}"
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{path} is not a SPIRAL checkpoint of format {CHECKPOINT_FORMAT!r} (found {found!r})")
        recorded = state["program"]
        if prog is None:
            prog = _rebuild_program(recorded, path)
        elif not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        else:
            given = describe_program(prog)
            differ = [key for key in ("action_space", "channels", "image_size", "steps") if given[key] != recorded[key]]
            if differ:
                raise ValueError(
                    f"{path} holds an agent for a {recorded['class']} with {recorded['steps']} steps, images "
                    f"{recorded['channels']}x{recorded['image_size']} and actions "
                    f"{[tuple(c) for c in recorded['action_space']]}; the program given differs in {differ}"
                )
        agent = cls(prog, conditional=state["conditional"], reward=state["reward"], blind=state["blind"],
                    device=device, config=SpiralConfig.from_dict(state["config"]),
                    # checkpoints written before decoding options existed sampled at temperature 1
                    temperature=state.get("temperature", 1.0), greedy_first=state.get("greedy_first", False),
                    smc_intermediate=state.get("smc_intermediate", "model"),
                    smc_tempering=state.get("smc_tempering"))
        try:
            agent.policy.load_state_dict(state["policy"])
            if agent.critic is not None:
                agent.critic.load_state_dict(state["critic"])
            if state["learner"] is not None:
                agent.learner.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: the weights do not fit the agent they describe: {str(error)[:300]}") from None
        agent.train_seconds = float(state["train_seconds"])
        agent._source_state = state["source_state"]
        agent._resume_rng = state["rng"]
        return agent


def holds_programs(data: Any) -> bool:
    """Whether ``data`` is a non-empty Dataset whose items are ``(image, {component: actions})``."""
    if not isinstance(data, torch.utils.data.Dataset) or len(data) == 0:
        return False
    item = data[0]
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)


def _rebuild_program(recorded: dict[str, Any], path: Path) -> Program:
    from spiral_ppl.io import renderer_from_config
    from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram
    from spiral_ppl.programs.scene_program import SceneProgram

    # Rebuilt programs get their class's default priors.
    classes = {"PaintProgram": PaintProgram, "RendererProgram": RendererProgram, "SceneProgram": SceneProgram}
    if recorded["renderer"] is None or recorded["class"] not in classes:
        raise ValueError(
            f"{path} holds an agent for a {recorded['class']}, which a checkpoint cannot rebuild; "
            f"pass the program: Spiral.load(path, prog=...)"
        )
    renderer = renderer_from_config(recorded["renderer"])
    return classes[recorded["class"]](renderer, recorded["steps"], pixel_scale=recorded["pixel_scale"])
