r"""The SPIRAL learner: every hyper-parameter in :class:`SpiralConfig`, and one update.

One update (:meth:`Learner.update`) reads top to bottom:

1. roll out a batch of episodes of the policy (conditioned on a batch of targets when the
   agent is conditional);
2. reward them (the critic's score or :math:`-\ell_2`, terminal or temporal, plus
   penalties; see :mod:`~spiral_ppl.inference.spiral.rewards`);
3. take one A2C step (Mnih et al. 2016) on

   .. math::

       L_\pi = -\sum_t \log \pi(a_t \mid s_t)\,\big(R_t - V(s_t)\big)
               + \tfrac{c_V}{2} \sum_t \big(R_t - V(s_t)\big)^2
               - c_H \sum_t \mathcal{H}\big(\pi(\cdot \mid s_t)\big),

   averaged over the batch, where the advantage :math:`R_t - V(s_t)` is held constant in the
   first term;
4. put the final renders in the replay buffer and take ``critic_steps`` WGAN-GP steps of
   the critic on draws from it (:mod:`~spiral_ppl.inference.spiral.critic`).

Steps 2 to 4 are :meth:`Learner.learn`, which also takes episodes rolled out elsewhere (by
Ray workers, :mod:`~spiral_ppl.inference.spiral.distributed`) with older weights: then
:math:`R_t` and the advantage are V-trace's (:mod:`~spiral_ppl.inference.spiral.vtrace`),
which reduce to the ones above when there is no lag.

Adam everywhere (the critic with :math:`\beta_1 = 0.5`, as in the paper), gradients
clipped by global norm, and ``torch.autocast`` (bfloat16) for the forward passes on CUDA
only. A non-finite loss raises :class:`TrainingDiverged` before any optimiser step, so the
weights (and any checkpoint) stay as they were after the last good update.

References: Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016;
Ganin et al. 2018 (hyper-parameters: batch 64, Adam 1e-4, critic beta1 0.5, replay of 20
batches, entropy cost 2e-3..1e-1 and policy learning rate 1e-5..3e-4 under PBT).

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.spiral import SpiralConfig
    >>> config = SpiralConfig.small(batch_size=8)
    >>> config.critic_lr, config.critic_betas, config.replay_batches
    (0.0001, (0.5, 0.999), 20)
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from spiral_ppl.inference.spiral.critic import Critic, wgan_gp_loss
from spiral_ppl.inference.spiral.policy import Policy
from spiral_ppl.inference.spiral.replay import ReplayBuffer
from spiral_ppl.inference.spiral.rewards import (
    check_new_stroke_penalty,
    discounted_returns,
    empty_canvases,
    new_stroke_starts,
    step_rewards,
)
from spiral_ppl.inference.spiral.rollout import Episode, replay, rollout
from spiral_ppl.inference.spiral.vtrace import vtrace
from spiral_ppl.programs.base import Program, mean_squared_error
from spiral_ppl.renderers.base import validate_actions

#: ``expert(state, programs) -> {name: LongTensor[B]}``: the next action towards each program.
Expert = Callable[[Any, "dict[str, torch.Tensor]"], "dict[str, torch.Tensor]"]


def expert_labels(prog: Program, expert: Expert, actions: dict[str, torch.Tensor],
                  programs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The expert's next action at every state of episodes that took ``actions`` ({name: [B, T]}).

    Program states are cheap to advance without rendering, so the states are rebuilt here.
    """
    first = next(iter(actions.values()))
    batch, steps = first.shape
    state = prog.stepwise.initial(batch, device=first.device)
    labels = []
    for t in range(steps):
        label = expert(state, programs)
        try:
            validate_actions(prog.action_space, label, ndim=1)
        except (TypeError, ValueError) as error:
            raise type(error)(f"the expert's action at step {t} is not an action of this program: {error}") from None
        labels.append(label)
        state = prog.stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
    return {name: torch.stack([label[name].to(first.device) for label in labels], dim=1) for name in actions}


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; raised before the optimiser step that would spread it."""


@dataclass(frozen=True)
class SpiralConfig:
    """Every hyper-parameter of a SPIRAL agent (the defaults follow the paper where it gives one)."""

    # -- episodes and rewards
    batch_size: int = 64  #: episodes per update
    discount: float = 1.0  #: gamma of the returns
    reward_scale: float = 1.0  #: rewards are multiplied by this (l2 rewards are small numbers)
    temporal_rewards: bool = False  #: r_t = s(x_t) - s(x_{t-1}) (SPIRAL++) instead of a terminal reward
    new_stroke_penalty: float = 0.0  #: cost of starting a stroke sequence (needs a 'flag' component)
    empty_canvas_penalty: float = 0.0  #: cost of an episode that leaves the canvas empty
    # -- policy network
    policy_channels: int = 32
    res_blocks: int = 3
    lstm_size: int = 256
    action_embedding: int = 16  #: embedding of each component of the previous action
    location_channels: int = 32  #: width of the conv decoder of location components
    noise_size: int = 10  #: noise vector of unconditional agents
    #: pixels enter the policy as ``0.5 + input_contrast * (x - 0.5)`` (1: as they are, the
    #: paper's). Small objects on MuJoCo's grey platform barely move the features of a
    #: freshly initialised network; with a contrast of 4 behaviour cloning learns where they
    #: are, with 1 it did not in 2,900 updates (benchmarks/RESULTS.md, issue 8).
    input_contrast: float = 1.0
    #: after a location component is sampled, the decoder also reads the first conv layer's
    #: features of the target and canvas at that place (off: the paper's decoder, which must
    #: recover what is there from the LSTM state alone).
    location_readout: bool = False
    #: location components also get logits computed at every cell from the first conv
    #: layer's features there, a fully convolutional head (off: the paper's decoder, which
    #: must carry where things are through the fully connected layer and the LSTM).
    spatial_locations: bool = False
    #: extra residual blocks in each spatial location head, each starting as the identity
    spatial_head_blocks: int = 0
    #: layer-normalise the fully connected layer's output before the LSTM (off: the paper's
    #: network), which makes the LSTM blind to that layer's scale. Without it, A2C grew the
    #: shipped CPU MNIST agent's fully connected outputs to a mean magnitude of 238 (at most
    #: 1,569) and saturated the LSTM: its state, and so its value, was the same for every
    #: image (benchmarks/RESULTS.md, issue 8).
    lstm_input_norm: bool = False
    # -- A2C
    policy_lr: float = 1e-4
    policy_betas: tuple[float, float] = (0.9, 0.999)
    entropy_cost: float = 0.01
    value_cost: float = 0.5
    max_grad_norm: float = 40.0
    # -- critic (WGAN-GP)
    critic_channels: int = 32
    critic_lr: float = 1e-4
    critic_betas: tuple[float, float] = (0.5, 0.999)
    critic_steps: int = 1  #: critic updates per policy update
    gradient_penalty: float = 10.0
    drift_penalty: float = 1e-3  #: weight of the squared mean score that keeps D near 0
    spectral_norm: bool = False  #: SPIRAL++'s spectrally normalised critic
    replay_batches: int = 20  #: capacity of the replay buffer, in batches
    # -- V-trace, for episodes from workers that run behind the learner (Ray backend)
    vtrace_rho_clip: float = 1.0  #: truncation of the importance weights in the advantages and value targets
    vtrace_c_clip: float = 1.0  #: truncation of the traces; at most vtrace_rho_clip
    # -- hardware
    mixed_precision: bool = True  #: bfloat16 autocast for forward passes, on CUDA only

    def __post_init__(self) -> None:
        for name in ("batch_size", "policy_channels", "lstm_size", "action_embedding", "location_channels",
                     "critic_channels", "critic_steps", "replay_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SpiralConfig.{name} must be a positive int, got {value!r}")
        for field in dataclasses.fields(self):
            # A switch given as 1 or "false" (a config file, a --set override) would silently count as true.
            if field.type in (bool, "bool") and not isinstance(getattr(self, field.name), bool):
                raise ValueError(f"SpiralConfig.{field.name} must be true or false, got {getattr(self, field.name)!r}")
        for name in ("res_blocks", "noise_size", "spatial_head_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"SpiralConfig.{name} must be a non-negative int, got {value!r}")
        for name in ("policy_lr", "critic_lr", "max_grad_norm", "reward_scale", "vtrace_rho_clip", "vtrace_c_clip",
                     "input_contrast"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SpiralConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("entropy_cost", "value_cost", "new_stroke_penalty", "empty_canvas_penalty",
                     "gradient_penalty", "drift_penalty"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SpiralConfig.{name} must be non-negative, got {getattr(self, name)!r}")
        if self.vtrace_c_clip > self.vtrace_rho_clip:
            raise ValueError(f"SpiralConfig.vtrace_c_clip ({self.vtrace_c_clip}) must not exceed vtrace_rho_clip "
                             f"({self.vtrace_rho_clip})")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"SpiralConfig.discount must lie in [0, 1], got {self.discount!r}")

    @classmethod
    def small(cls, **overrides: Any) -> "SpiralConfig":
        """A narrow network for CPU tests and small canvases; ``overrides`` replace fields."""
        sizes = dict(batch_size=32, policy_channels=16, res_blocks=1, lstm_size=64, location_channels=8,
                     critic_channels=16)
        return cls(**{**sizes, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SpiralConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SpiralConfig fields {unknown}; the checkpoint is from another version")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


@contextlib.contextmanager
def denormals_flushed():
    """Compute with denormal floats flushed to zero on the CPU for the duration, then restore
    the caller's setting.

    Gradients through weights at or near zero (output layers initialised to zero, the new
    channels of :meth:`Spiral.widened`) are tiny, and CPUs compute with denormal floats many
    times slower than with normal ones: a behaviour-cloning update of the 6-stroke MNIST policy
    took 2.2x as long with them and an A2C update 3.1x, and of that policy widened to 32
    channels 4.8x and 6.2x (``benchmarks/bench_spiral.py``, benchmarks/RESULTS.md, issue 6).
    Flushing moves values by less than ``1.2e-38``.
    torch has no getter for the setting, so it is probed: a product that would be denormal
    comes out as zero when flushing is on.
    """
    was_on = float(torch.tensor([1e-38]) * 0.01) == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _check_finite(name: str, value: torch.Tensor, step: int) -> None:
    value = value.detach()
    if not bool(torch.isfinite(value).all()):
        raise TrainingDiverged(
            f"the {name} became {value.item()} at update {step}; training stopped before the optimiser step of "
            "this loss, and the last checkpoint (written only after good updates) is untouched: resume from it "
            "with Spiral.load, with lower learning rates or stronger gradient clipping, or check the data."
        )


class Learner:
    """Optimisers, replay buffer and the update of a SPIRAL agent's policy and critic.

    :param prog: the program the agent acts on.
    :param policy: the agent's :class:`Policy`.
    :param critic: its :class:`Critic`, or ``None`` for the l2 reward.
    :param config: the :class:`SpiralConfig`.
    :param blind: the policy does not see intermediate canvases.
    """

    def __init__(self, prog: Program, policy: Policy, critic: Critic | None, config: SpiralConfig, *,
                 blind: bool) -> None:
        if config.new_stroke_penalty:
            check_new_stroke_penalty(prog.action_space)
        self.prog, self.policy, self.critic, self.config, self.blind = prog, policy, critic, config, blind
        self.policy_optimiser = torch.optim.Adam(policy.parameters(), lr=config.policy_lr, betas=config.policy_betas)
        self.critic_optimiser = (
            torch.optim.Adam(critic.parameters(), lr=config.critic_lr, betas=config.critic_betas) if critic else None
        )
        self.replay = ReplayBuffer(config.replay_batches)
        self.updates = 0
        self._empty_canvas: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def autocast(self):
        """bfloat16 autocast on CUDA when asked; a no-op on the CPU."""
        if self.config.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def score(self, canvases: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """``(B,)`` how good final canvases are: the critic's score, else minus the l2 to the targets."""
        if self.critic is not None:
            return self.critic(canvases, targets)
        return -mean_squared_error(canvases, targets)

    def empty_canvas(self) -> torch.Tensor:
        """The program's canvas before any action (drawn once, uncounted: it is no program's render)."""
        if self._empty_canvas is None:
            self._empty_canvas = self.prog.blank_canvas(1, device=self.device).to(self.device)
        return self._empty_canvas

    def rewards(self, episode, targets: torch.Tensor | None) -> torch.Tensor:
        """``(B, T)`` rewards of a batch of episodes (see :mod:`~spiral_ppl.inference.spiral.rewards`)."""
        config = self.config
        batch = episode.final.shape[0]
        nothing_drawn = torch.zeros_like(episode.final)

        def score(canvases: torch.Tensor) -> torch.Tensor:
            paired = None if targets is None else targets.repeat(canvases.shape[0] // batch, 1, 1, 1)
            return self.score(canvases, paired)

        rewards = step_rewards(score, episode.canvases, nothing_drawn, temporal=config.temporal_rewards)
        rewards = rewards * config.reward_scale
        if config.new_stroke_penalty:
            rewards = rewards - config.new_stroke_penalty * new_stroke_starts(episode.actions["flag"])
        if config.empty_canvas_penalty:
            rewards[:, -1] -= config.empty_canvas_penalty * empty_canvases(episode.final, self.empty_canvas())
        return rewards

    def update(self, targets: torch.Tensor | None, real_images: Callable[[int], torch.Tensor]) -> dict[str, float]:
        """Roll out a batch of episodes here and :meth:`learn` from it; returns the losses.

        :param targets: ``(batch_size, C, H, W)`` targets of a conditional agent, else ``None``.
        :param real_images: ``count -> (count, C, H, W)`` data images for an unconditional critic.
        """
        with self.autocast():
            try:
                episode = rollout(self.policy, self.prog, self.config.batch_size, targets, blind=self.blind,
                                  observe_all=self.config.temporal_rewards)
            except FloatingPointError as error:
                raise self.diverged(error) from None
        return self.learn(episode, targets, real_images)

    def diverged(self, error: Exception) -> TrainingDiverged:
        """The error to stop training with when a rollout (here or on a worker) produced non-finite numbers."""
        return TrainingDiverged(
            f"{error} at update {self.updates + 1}; training stopped, and the last checkpoint (written only "
            "after good updates) is untouched: resume from it with lower learning rates"
        )

    def learn(
        self,
        episode: Episode,
        targets: torch.Tensor | None,
        real_images: Callable[[int], torch.Tensor],
        behaviour_log_probs: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One policy update from a batch of episodes and ``critic_steps`` critic updates.

        :param episode: episodes whose log-probabilities, entropies and values carry gradients
            of the current policy (from :func:`rollout` here, or :func:`replay` of a worker's).
        :param behaviour_log_probs: ``(B, T)`` log-probabilities of the actions under the
            weights that chose them, when those were older than the current ones: the
            advantages are then V-trace's (:mod:`~spiral_ppl.inference.spiral.vtrace`);
            ``None`` (on-policy) gives A2C's, which V-trace equals without lag.
        """
        config, step = self.config, self.updates + 1
        with torch.no_grad(), self.autocast():
            rewards = self.rewards(episode, targets).float()
        lag_metrics = {}
        if behaviour_log_probs is None:
            returns = discounted_returns(rewards, config.discount)
            advantages = returns - episode.values
            policy_advantages, value_errors = advantages.detach(), advantages
        else:
            log_rhos = episode.log_probs.detach().float() - behaviour_log_probs.to(rewards.device).float()
            corrected = vtrace(log_rhos, rewards, episode.values.detach(), discount=config.discount,
                               rho_clip=config.vtrace_rho_clip, c_clip=config.vtrace_c_clip)
            returns = corrected.values
            policy_advantages, value_errors = corrected.advantages, corrected.values - episode.values
            lag_metrics = {"importance_weight": float(corrected.rhos.mean())}
        policy_loss = -(episode.log_probs * policy_advantages).sum(1).mean()
        value_loss = 0.5 * value_errors.pow(2).sum(1).mean()
        entropy = episode.entropies.sum(1).mean()
        loss = policy_loss + config.value_cost * value_loss - config.entropy_cost * entropy
        _check_finite("policy loss (A2C)", loss, step)

        self.policy_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm)
        self.policy_optimiser.step()

        metrics = {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "return": float(returns[:, 0].mean()),
            "l2": float(mean_squared_error(episode.final, targets).mean()) if targets is not None else float("nan"),
            "ink": float(episode.final.mean()),
            **lag_metrics,
        }
        if self.critic is not None:
            self.replay.add(episode.final, targets)
            metrics.update(self.update_critic(real_images, step))
        self.updates = step
        return metrics

    def set_hyperparameters(self, **changes: Any) -> None:
        """Change hyper-parameters that leave the networks' shapes alone, keeping the optimisers' state.

        Population-based training uses this when it perturbs the entropy cost and the
        learning rates of a member that copied another's weights.
        """
        shaped = {"policy_channels", "res_blocks", "lstm_size", "action_embedding", "location_channels",
                  "noise_size", "critic_channels", "spectral_norm", "lstm_input_norm", "spatial_head_blocks"}
        fixed = sorted(shaped & set(changes))
        if fixed:
            raise ValueError(f"{fixed} set the networks' shapes and cannot change during training; build a new agent")
        self.config = dataclasses.replace(self.config, **changes)
        for group in self.policy_optimiser.param_groups:
            group["lr"] = self.config.policy_lr
        if self.critic_optimiser is not None:
            for group in self.critic_optimiser.param_groups:
                group["lr"] = self.config.critic_lr
        self.replay.capacity = self.config.replay_batches

    def imitate(self, targets: torch.Tensor, programs: dict[str, torch.Tensor],
                expert: Expert | None = None) -> dict[str, float]:
        r"""One supervised update towards ground-truth programs (behaviour cloning, or DAgger).

        Without an ``expert`` the policy is run with every component forced to the program's
        value, seeing the canvases those programs draw, and trained to maximise their
        log-probability: the loss is :math:`-\sum_t \log \pi(a^*_t \mid s^*_t)`, averaged over
        the batch. The policy then only ever sees the demonstrations' canvases; once its own
        first mistake takes it off them at test time, nothing it learned says how to recover.

        With an ``expert`` (DAgger, Ross, Gordon and Bagnell, AISTATS 2011) the policy draws
        its own episodes, and at every state :math:`s_t` it reached the expert says what the
        program's author would do next, :math:`a^E_t = \text{expert}(s_t)`; the loss is
        :math:`-\sum_t \log \pi(a^E_t \mid s_t)`. The episodes cost ``T`` renders each.
        The value head is not trained either way.

        :param targets: ``(B, C, H, W)`` images of the programs (what a conditional policy sees as target).
        :param programs: their actions ``{name: LongTensor[B, T]}``.
        :param expert: ``expert(state, programs) -> {name: LongTensor[B]}``, the best next action
            from a program state (``prog.stepwise``: :meth:`Stepwise.initial`, :meth:`Stepwise.advance`)
            towards each target's program, such as :meth:`spiral_ppl.data.MujocoScenes.expert`.
        """
        step = self.updates + 1
        conditioning = targets if self.policy.conditional else None
        if expert is None:
            def forced(t: int, component, logits: torch.Tensor) -> torch.Tensor:
                return programs[component.name][:, t].to(logits.device)

            with self.autocast():
                episode = rollout(self.policy, self.prog, targets.shape[0], conditioning,
                                  blind=self.blind, draw_final=False, choose=forced)
        else:
            with torch.no_grad(), self.autocast():
                own = rollout(self.policy, self.prog, targets.shape[0], conditioning, blind=self.blind)
            labels = expert_labels(self.prog, expert, own.actions, programs)
            with self.autocast():
                episode = replay(self.policy, own.actions, own.canvases, conditioning, own.noise,
                                 blind=self.blind, labels=labels)
        loss = -episode.log_probs.float().sum(1).mean()
        _check_finite("imitation loss", loss, step)
        self.policy_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.policy_optimiser.step()
        self.updates = step
        return {"imitation_loss": loss.item()}

    def update_critic(self, real_images: Callable[[int], torch.Tensor], step: int) -> dict[str, float]:
        """``critic_steps`` WGAN-GP steps on renders from the replay buffer."""
        config = self.config
        for _ in range(config.critic_steps):
            fake, targets = self.replay.sample(config.batch_size)
            # A conditional critic's real pairs are (target, target): a perfect reconstruction.
            real = targets if targets is not None else real_images(config.batch_size).to(self.device)
            with self.autocast():
                loss, parts = wgan_gp_loss(self.critic, real, fake, targets,
                                           gradient_penalty=config.gradient_penalty,
                                           drift_penalty=config.drift_penalty)
            _check_finite("critic loss (WGAN-GP)", loss, step)
            self.critic_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), config.max_grad_norm)
            self.critic_optimiser.step()
        return {"critic_loss": loss.item(), **{name: float(value) for name, value in parts.items()}}

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "policy_optimiser": self.policy_optimiser.state_dict(),
            "critic_optimiser": self.critic_optimiser.state_dict() if self.critic_optimiser else None,
            "replay": self.replay.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.policy_optimiser.load_state_dict(state["policy_optimiser"])
        if self.critic_optimiser is not None:
            self.critic_optimiser.load_state_dict(state["critic_optimiser"])
        self.replay.load_state_dict(state["replay"], device=self.device)
