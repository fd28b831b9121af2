r"""Training a SPIRAL agent by A2C against its reward, top to bottom.

:func:`fit` runs ``steps`` updates. Each update:

1. takes a batch of episodes from the episode source (:mod:`.episodes`: rolled out here, or
   by Ray workers with weights a few updates old);
2. rewards them (:meth:`Learner.rewards`: the critic's score or :math:`-\ell_2`, terminal or
   temporal, times ``reward.scale``, minus penalties; :mod:`.rewards`);
3. takes one A2C step (Mnih et al. 2016) on

   .. math::

       L_\pi = -\sum_t \log \pi(a_t \mid s_t)\,\big(R_t - V(s_t)\big)
               + \tfrac{c_V}{2} \sum_t \big(R_t - V(s_t)\big)^2
               - c_H \sum_t \mathcal{H}\big(\pi(\cdot \mid s_t)\big),

   averaged over the batch, the advantage :math:`R_t - V(s_t)` held constant in the first
   term. Episodes acted by older weights get V-trace's :math:`R_t` and advantages instead
   (:mod:`.vtrace`), which equal A2C's when there is no lag;
4. puts the final renders in the replay buffer and takes ``critic.steps`` WGAN-GP steps of the
   critic on draws from it (:mod:`.critic`; real pairs of a conditional critic are
   (target, target), a perfect reconstruction);
5. logs, evaluates one pass on held-out targets, and writes the checkpoint, at the cadences of
   ``config.train``.

Adam everywhere (the critic with :math:`\beta_1 = 0.5`, as in the paper), gradients clipped
by global norm, ``torch.autocast`` (bfloat16) for forward passes on CUDA only. A non-finite
loss raises :class:`TrainingDiverged` before any optimiser step, so the weights (and every
checkpoint) stay as they were after the last good update.

Reference: Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016;
Ganin et al. 2018; Gulrajani et al. 2017 (WGAN-GP).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.inference.engine import hide_progress
from spiral_ppl.inference.spiral.config import SHAPES, SpiralConfig
from spiral_ppl.inference.spiral.critic import half_masks, wgan_gp_loss
from spiral_ppl.inference.spiral.episodes import EpisodeBatch, EpisodeSource, episode_source
from spiral_ppl.inference.spiral.logs import TrainingLog
from spiral_ppl.inference.spiral.replay import ReplayBuffer
from spiral_ppl.inference.spiral.rewards import (
    RewardNormaliser,
    check_new_stroke_penalty,
    discounted_returns,
    empty_canvases,
    new_stroke_starts,
    step_rewards,
)
from spiral_ppl.inference.spiral.rollout import Episode
from spiral_ppl.inference.spiral.sources import ImageSource, hold_out
from spiral_ppl.inference.spiral.vtrace import vtrace
from spiral_ppl.io import atomic_path, atomic_write_bytes
from spiral_ppl.programs.base import mean_squared_error

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; raised before the optimiser step that would spread it."""


@contextlib.contextmanager
def denormals_flushed():
    """Compute with denormal floats flushed to zero on the CPU for the duration, then restore
    the caller's setting.

    Gradients through weights at or near zero (output layers initialised to zero) are tiny,
    and CPUs compute with denormal floats many times slower than with normal ones (the A2C
    update of the shipped MNIST policy ran about 3 times faster flushed; ``benchmarks/bench_spiral.py``).
    Flushing moves values by less than ``1.2e-38``. torch has no getter for the setting, so it
    is probed: a product that would be denormal comes out as zero when flushing is on.
    """
    was_on = float(torch.tensor([1e-38]) * 0.01) == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


@contextlib.contextmanager
def training_time(agent: "Spiral"):
    """Add the wall-clock and CPU seconds of the block to the agent's training time."""
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        agent.train_seconds += time.perf_counter() - started
        agent.train_cpu_seconds += time.process_time() - cpu_started


def time_record(agent: "Spiral") -> dict[str, float]:
    """Where training stands, the first columns of every log row: update, seconds, CPU seconds."""
    return {"update": agent.learner.updates, "seconds": agent.train_seconds, "cpu_seconds": agent.train_cpu_seconds}


def check_finite(name: str, value: torch.Tensor, update: int) -> None:
    """Stop training with :class:`TrainingDiverged` if ``value`` (a loss) is not finite."""
    value = value.detach()
    if not bool(torch.isfinite(value).all()):
        raise TrainingDiverged(
            f"the {name} became {value.item()} at update {update}; training stopped before the optimiser step of "
            "this loss, and the last checkpoint (written only after good updates) is untouched: resume from it "
            "with Spiral.load, with lower learning rates or stronger gradient clipping, or check the data."
        )


def check_weights(name: str, optimiser: torch.optim.Optimizer, update: int) -> None:
    """Stop training with :class:`TrainingDiverged` if an optimiser step left a weight or a
    moment estimate NaN or infinite (a learning rate far too high, say): the checkpoint is
    written only after this check, so the last one on disk stays good."""
    # Grouped by device: on a GPU, Adam keeps its step counts on the CPU beside GPU weights.
    finite: dict[torch.device, list[torch.Tensor]] = {}
    for group in optimiser.param_groups:
        for parameter in group["params"]:
            moments = optimiser.state.get(parameter, {}).values()
            for tensor in (parameter.detach(), *moments):
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    finite.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    # One synchronisation per device.
    if not all(bool(torch.stack(flags).all()) for flags in finite.values()):
        raise TrainingDiverged(
            f"the {name}'s weights (or its optimiser's moments) became NaN or infinite at update {update}; "
            "training stopped before writing them, and the last checkpoint is untouched: resume from it "
            "with Spiral.load, with lower learning rates or stronger gradient clipping."
        )


def check_outputs(agent: "Spiral") -> None:
    """Stop training with :class:`TrainingDiverged` if the policy's weights, finite as they may
    be, give non-finite action probabilities or values on a blank canvas, the first thing the
    next update would meet: weights blown up by a learning rate far too high are not written."""
    blank = agent.learner.empty_canvas()
    noise = torch.zeros(1, agent.policy.noise_size, device=blank.device) if agent.policy.noise_size else None
    try:
        with torch.no_grad(), agent.learner.autocast():
            # Greedy choices draw no random numbers, so training's random streams stay as they were.
            out = agent.policy.step(blank, blank if agent.conditional else None, None, noise,
                                    agent.policy.initial_hidden(1, blank.device),
                                    choose=lambda component, logits: logits.argmax(-1))
        if not bool(torch.isfinite(out.value).all()):
            raise FloatingPointError("the policy's value became non-finite")
    except FloatingPointError as error:
        raise TrainingDiverged(
            f"{error} after update {agent.learner.updates}; training stopped before writing these weights, and the "
            "last checkpoint is untouched: resume from it with lower learning rates or stronger gradient clipping."
        ) from None


class Learner:
    """What training keeps besides the networks: optimisers, replay buffer and the update count.

    :param agent: the :class:`~spiral_ppl.inference.spiral.Spiral` whose policy and critic it trains.
    :param config: the hyper-parameters to train with.
    """

    def __init__(self, agent: "Spiral", config: SpiralConfig) -> None:
        if config.reward.new_stroke_penalty:
            check_new_stroke_penalty(agent.prog.action_space)
        self.prog, self.policy, self.critic, self.blind = agent.prog, agent.policy, agent.critic, agent.blind
        self.config = config
        self.policy_optimiser = torch.optim.Adam(self.policy.parameters(), lr=config.a2c.lr, betas=config.a2c.betas)
        self.critic_optimiser = (torch.optim.Adam(self.critic.parameters(), lr=config.critic.lr,
                                                  betas=config.critic.betas) if self.critic is not None else None)
        self.replay = ReplayBuffer(config.critic.replay_batches)
        self.reward_normaliser = RewardNormaliser()
        self.updates = 0
        self._empty_canvas: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def autocast(self):
        """bfloat16 autocast on CUDA when ``train.mixed_precision``; a no-op on the CPU."""
        if self.config.train.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def diverged(self, error: Exception) -> TrainingDiverged:
        """The error to stop training with when a rollout (here or on a worker) produced non-finite numbers."""
        return TrainingDiverged(
            f"{error} at update {self.updates + 1}; training stopped, and the last checkpoint (written only "
            "after good updates) is untouched: resume from it with lower learning rates"
        )

    def set_hyperparameters(self, changes: dict[str, Any]) -> SpiralConfig:
        """Change settings that leave the networks' shapes alone (``{"a2c.lr": 3e-4}``), keeping the
        optimisers' state; returns the new configuration. Population-based training uses it."""
        fixed = sorted(SHAPES & set(changes))
        if fixed:
            raise ValueError(f"{fixed} set the networks' shapes and cannot change during training; build a new agent")
        self.config = self.config.replace(changes)
        for group in self.policy_optimiser.param_groups:
            group["lr"] = self.config.a2c.lr
        if self.critic_optimiser is not None:
            for group in self.critic_optimiser.param_groups:
                group["lr"] = self.config.critic.lr
        self.replay.capacity = self.config.critic.replay_batches
        if self.critic is not None:
            self.critic.complement = self.config.critic.complement
        return self.config

    # -- one update: rewards, the A2C loss, the critic -----------------------------------------

    def empty_canvas(self) -> torch.Tensor:
        """The program's canvas before any action (drawn once, uncounted: it is no program's render)."""
        if self._empty_canvas is None:
            self._empty_canvas = self.prog.blank_canvas(1, device=self.device)
        return self._empty_canvas

    def rewards(self, episode: Episode, targets: torch.Tensor | None) -> torch.Tensor:
        """``(B, T)`` rewards of a batch of episodes (see :mod:`~spiral_ppl.inference.spiral.rewards`);
        with ``reward.normalise``, their totals also update the running scale."""
        reward = self.config.reward
        batch = episode.final.shape[0]
        # A complement critic judges one half per episode, the same half at every step, so that
        # temporal rewards still add up to the final canvas's score.
        masks = (half_masks(batch, self.prog.image_size, device=episode.final.device)
                 if self.critic is not None and self.critic.complement else None)

        def score(canvases: torch.Tensor) -> torch.Tensor:
            copies = canvases.shape[0] // batch
            if self.critic is None:
                return -mean_squared_error(canvases, targets.repeat(copies, 1, 1, 1))
            paired = None if targets is None else targets.repeat(copies, 1, 1, 1)
            return self.critic(canvases, paired, None if masks is None else masks.repeat(copies, 1, 1, 1))

        rewards = step_rewards(score, episode.canvases, torch.zeros_like(episode.final), temporal=reward.temporal)
        rewards = rewards * reward.scale
        if reward.normalise:
            rewards = self.reward_normaliser(rewards)
        # Penalties come after normalisation: they cost the same share of a typical return
        # whatever the score's units.
        if reward.new_stroke_penalty:
            rewards = rewards - reward.new_stroke_penalty * new_stroke_starts(episode.actions["flag"])
        if reward.empty_canvas_penalty:
            rewards[:, -1] -= reward.empty_canvas_penalty * empty_canvases(episode.final, self.empty_canvas())
        return rewards

    def learn(self, episode: Episode, targets: torch.Tensor | None, real_images: Callable[[int], torch.Tensor],
              behaviour_log_probs: torch.Tensor | None = None) -> dict[str, float]:
        """One policy update from a batch of episodes and ``critic.steps`` critic updates.

        :param episode: episodes scored by the current weights (gradients flow through them).
        :param real_images: ``count -> (count, C, H, W)`` data images for an unconditional critic.
        :param behaviour_log_probs: ``(B, T)`` log-probabilities under the weights that acted,
            when older than the current ones (V-trace); ``None``: on-policy, A2C's targets.
        """
        a2c, update = self.config.a2c, self.updates + 1
        with torch.no_grad(), self.autocast():
            rewards = self.rewards(episode, targets).float()
        lag_metrics = {}
        if behaviour_log_probs is None:
            returns = discounted_returns(rewards, a2c.discount)
            advantages = returns - episode.values
            policy_advantages, value_errors = advantages.detach(), advantages
        else:
            log_rhos = episode.log_probs.detach().float() - behaviour_log_probs.to(rewards.device).float()
            corrected = vtrace(log_rhos, rewards, episode.values.detach(), discount=a2c.discount,
                               rho_clip=a2c.vtrace_rho_clip, c_clip=a2c.vtrace_c_clip)
            returns = corrected.values
            policy_advantages, value_errors = corrected.advantages, corrected.values - episode.values
            lag_metrics = {"importance_weight": float(corrected.rhos.mean())}
        policy_loss = -(episode.log_probs * policy_advantages).sum(1).mean()
        value_loss = 0.5 * value_errors.pow(2).sum(1).mean()
        entropy = episode.entropies.sum(1).mean()
        loss = policy_loss + a2c.value_cost * value_loss - a2c.entropy_cost * entropy
        self.step_policy("policy loss (A2C)", loss)

        metrics = {
            "policy_loss": policy_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.item(),
            "return": float(returns[:, 0].mean()),
            "l2": float(mean_squared_error(episode.final, targets).mean()) if targets is not None else float("nan"),
            "ink": float(episode.final.mean()),
            **({"reward_std": self.reward_normaliser.std} if self.config.reward.normalise else {}),
            **lag_metrics,
        }
        if self.critic is not None:
            self.replay.add(episode.final, targets)
            metrics.update(self.update_critic(real_images, update))
        self.updates = update
        return metrics

    def step_policy(self, name: str, loss: torch.Tensor) -> None:
        """One optimiser step of the policy on ``loss``, refused if the loss is not finite."""
        check_finite(name, loss, self.updates + 1)
        self.policy_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.a2c.max_grad_norm)
        self.policy_optimiser.step()
        check_weights("policy", self.policy_optimiser, self.updates + 1)

    def update_critic(self, real_images: Callable[[int], torch.Tensor], update: int) -> dict[str, float]:
        """``critic.steps`` WGAN-GP steps on renders from the replay buffer."""
        critic, batch_size = self.config.critic, self.config.a2c.batch_size
        for _ in range(critic.steps):
            fake, targets = self.replay.sample(batch_size)
            # A conditional critic's real pairs are (target, target): a perfect reconstruction.
            real = targets if targets is not None else real_images(batch_size).to(self.device)
            if targets is not None and critic.mismatched_pairs:
                fake = with_mismatched_pairs(fake, targets, critic.mismatched_pairs)
            masks = (half_masks(batch_size, self.prog.image_size, device=fake.device)
                     if self.critic.complement else None)
            with self.autocast():
                loss, parts = wgan_gp_loss(self.critic, real, fake, targets, gradient_penalty=critic.gradient_penalty,
                                           drift_penalty=critic.drift_penalty, masks=masks)
            check_finite("critic loss (WGAN-GP)", loss, update)
            self.critic_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config.a2c.max_grad_norm)
            self.critic_optimiser.step()
            check_weights("critic", self.critic_optimiser, update)
        return {"critic_loss": loss.item(), **{name: float(value) for name, value in parts.items()}}

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "policy_optimiser": self.policy_optimiser.state_dict(),
            "critic_optimiser": self.critic_optimiser.state_dict() if self.critic_optimiser else None,
            "replay": self.replay.state_dict(),
            "reward_normaliser": self.reward_normaliser.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.policy_optimiser.load_state_dict(state["policy_optimiser"])
        if self.critic_optimiser is not None:
            self.critic_optimiser.load_state_dict(state["critic_optimiser"])
        self.replay.load_state_dict(state["replay"], device=self.device)
        if "reward_normaliser" in state:  # older checkpoints lack it
            self.reward_normaliser.load_state_dict(state["reward_normaliser"])


def with_mismatched_pairs(fake: torch.Tensor, targets: torch.Tensor, share: float) -> torch.Tensor:
    """``fake`` with its first ``round(share * B)`` images replaced by other rows' targets: real
    images that do not match the target they are paired with (each row gets the next row's).

    A conditional critic that sees only (target, target) as real and (render, target) as fake
    can score realism alone; these pairs are real images that it must still score as fake.
    Reference: Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016 (the
    matching-aware discriminator).
    """
    count = round(share * fake.shape[0])
    if count == 0 or fake.shape[0] < 2:
        return fake
    fake = fake.clone()
    fake[:count] = targets.roll(-1, dims=0)[:count]
    return fake


# -- the loop ---------------------------------------------------------------------------------------


def fit(agent: "Spiral", data: Any, steps: int, *, eval_data: Any = None, log_dir: str | Path | None = None,
        checkpoint: str | Path | None = None, progress: bool | None = None,
        backend: "str | EpisodeSource" = "local",
        callback: Callable[[dict[str, float]], Any] | None = None,
        stop: Callable[[], bool] | None = None) -> list[dict[str, float]]:
    """``steps`` more updates of ``agent`` on the target images ``data`` (see :meth:`Spiral.fit`),
    or fewer if ``stop()`` says so after one (the last is evaluated and checkpointed as the
    ``steps``-th would be)."""
    checks.positive_int("steps", steps, hint="updates to run")
    train = agent.config.train
    prog = agent.prog
    training, held_out = None, None
    if eval_data is not None or train.eval_every:
        training, held_out = hold_out(data, eval_data, train.eval_size, prog.channels, prog.image_size)
    images = ImageSource(data, prog.channels, prog.image_size, indices=training)
    agent.restore_training_streams(images)
    source = episode_source(backend)
    log = TrainingLog(log_dir) if log_dir is not None else None
    if log is not None:
        log.discard_after(agent.learner.updates)
    if checkpoint is not None:
        atomic_path.remove_stale(checkpoint)
    history: list[dict[str, float]] = []
    episode_steps = agent.config.a2c.batch_size * prog.steps
    try:
        source.start(agent, images)
        with denormals_flushed(), tqdm(total=steps, desc=agent.name, unit="update",
                                       disable=hide_progress(progress)) as bar:
            for _ in range(steps):
                before = agent.train_seconds
                with training_time(agent):
                    batch: EpisodeBatch = source.next_batch()
                    metrics = agent.learner.learn(batch.episode, batch.targets, images.batch,
                                                  behaviour_log_probs=batch.behaviour_log_probs)
                    agent.remember_training_streams(images)
                metrics = {**time_record(agent), "agent_steps_per_second": episode_steps / (agent.train_seconds - before),
                           **metrics, **(batch.metrics or {})}
                history.append(metrics)
                bar.update(1)
                bar.set_postfix({k: f"{metrics[k]:.4g}" for k in ("l2", "return") if math.isfinite(metrics[k])})
                last = len(history) == steps or (stop is not None and stop())
                report(agent, metrics, last, held_out=held_out, log=log, log_dir=log_dir, checkpoint=checkpoint)
                if callback is not None:
                    callback(history[-1])
                if last:
                    break
    finally:
        source.close()
        if log is not None:
            log.close()
    return history


def report(agent: "Spiral", metrics: dict[str, float], last: bool, *, held_out: torch.Tensor | None,
           log: TrainingLog | None, log_dir: str | Path | None, checkpoint: str | Path | None,
           table: str | None = "train") -> None:
    """Log (to ``table``; ``None``: the caller has), evaluate and checkpoint after an update, at the
    cadences of ``config.train``; ``last`` evaluates and checkpoints whatever the cadence."""
    train, update = agent.config.train, agent.learner.updates
    if log is not None and table is not None and train.log_every and update % train.log_every == 0:
        log.write(table, metrics)
    if held_out is not None and train.eval_every and (update % train.eval_every == 0 or last):
        evaluation = evaluate(agent, held_out, log_dir, update)
        metrics.update(evaluation)
        if log is not None:
            log.write("eval", {**time_record(agent), **evaluation})
        if log_dir is not None and "eval_l2" in evaluation:
            keep_if_best(agent, evaluation["eval_l2"], Path(log_dir))
    if checkpoint is not None and ((train.checkpoint_every and update % train.checkpoint_every == 0) or last):
        check_outputs(agent)
        agent.save(checkpoint, keep=train.keep_checkpoints)


def keep_if_best(agent: "Spiral", eval_l2: float, folder: Path) -> None:
    """Save the agent's weights as ``best.pt`` in ``folder`` if ``eval_l2`` is the lowest there yet
    (recorded in ``best.json``, so a resumed run compares with the runs before it)."""
    record = folder / "best.json"
    best = json.loads(record.read_text())["eval_l2"] if record.exists() else math.inf
    if eval_l2 < best:
        agent.save(folder / "best.pt", training_state=False)
        atomic_write_bytes(record, (json.dumps({"eval_l2": eval_l2, "update": agent.learner.updates}) + "\n").encode())


def evaluate(agent: "Spiral", targets: torch.Tensor, log_dir: str | Path | None = None,
             update: int | None = None) -> dict[str, float]:
    """One pass on ``targets`` (see :meth:`Spiral.evaluate`)."""
    from spiral_ppl.plots import plt, reconstruction_grid

    targets = agent.prog.check_images(targets, name="targets").to(agent.device)
    images = agent.one_pass(targets)
    if agent.conditional:
        empty = agent.learner.empty_canvas().expand_as(targets)
        metrics = {"eval_l2": float(mean_squared_error(images, targets).mean()),
                   "blank_l2": float(mean_squared_error(empty, targets).mean())}
    else:
        metrics = {"eval_ink": float(images.mean()), "data_ink": float(targets.mean())}
    if log_dir is not None:
        name = "reconstruction" if agent.conditional else "sample"
        figure = reconstruction_grid(targets[:8].cpu(), {name: images[:8].cpu()},
                                     Path(log_dir) / f"samples_{update if update is not None else 'eval'}.png")
        plt.close(figure)
    return metrics
