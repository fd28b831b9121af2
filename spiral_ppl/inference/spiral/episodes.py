r"""Where a training update's episodes come from: one interface, two sources.

An :class:`EpisodeSource` hands the training loop (:mod:`~spiral_ppl.inference.spiral.training`)
one :class:`EpisodeBatch` per update: ``batch_size`` episodes whose log-probabilities,
entropies and values carry gradients of the *current* policy, the targets they were drawn
for, and, when the actions were chosen by older weights, those weights' log-probabilities
:math:`\log\mu(a_t \mid x_t)` for V-trace. The loop is the same whichever source it reads.

- :class:`LocalEpisodes`: rolls the episodes out here, on the agent's device, with the
  current weights (on-policy; ``behaviour_log_probs`` is ``None``);
- :class:`~spiral_ppl.inference.spiral.distributed.RayEpisodes`: rollout workers on Ray
  render them with the weights of a few updates ago, and the learner re-scores them here.

Each source charges the renders it spent to the program's render meter, so a run costs the
same in renders wherever its canvases were drawn.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, NamedTuple

import torch

from spiral_ppl.inference.spiral.rollout import Episode, rollout

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral
    from spiral_ppl.inference.spiral.sources import ImageSource


class EpisodeBatch(NamedTuple):
    """One update's episodes."""

    episode: Episode  #: scored by the current weights (gradients flow through it)
    targets: torch.Tensor | None  #: ``(B, C, H, W)`` of a conditional agent, else ``None``
    behaviour_log_probs: torch.Tensor | None = None  #: ``(B, T)`` under the weights that acted, if older
    metrics: dict | None = None  #: what the source measured on the way (policy lag, waiting time)


class EpisodeSource(abc.ABC):
    """A stream of :class:`EpisodeBatch`: ``start``, then ``next_batch`` once per update, then ``close``."""

    def start(self, agent: "Spiral", images: "ImageSource") -> None:
        """Get ready to serve ``agent``, drawing targets (and real images) from ``images``."""
        self.agent, self.images = agent, images

    @abc.abstractmethod
    def next_batch(self) -> EpisodeBatch:
        """The episodes of the next update."""

    def close(self) -> None:
        """Release workers and other resources (the default holds none)."""


class LocalEpisodes(EpisodeSource):
    """Episodes rolled out in this process with the current weights."""

    def next_batch(self) -> EpisodeBatch:
        agent = self.agent
        targets = self.images.batch(agent.config.a2c.batch_size).to(agent.device) if agent.conditional else None
        with agent.learner.autocast():
            try:
                episode = rollout(agent.policy, agent.prog, agent.config.a2c.batch_size, targets, blind=agent.blind,
                                  observe_all=agent.config.reward.temporal)
            except FloatingPointError as error:
                raise agent.learner.diverged(error) from None
        return EpisodeBatch(episode, targets)


def episode_source(backend: "str | EpisodeSource") -> EpisodeSource:
    """``"local"`` -> :class:`LocalEpisodes`; ``"ray"`` -> two Ray workers; a source as it is."""
    if isinstance(backend, EpisodeSource):
        return backend
    if backend == "local":
        return LocalEpisodes()
    if backend == "ray":
        from spiral_ppl.inference.spiral.distributed import RayEpisodes

        return RayEpisodes()
    raise ValueError(f"backend must be 'local', 'ray' or an EpisodeSource such as RayEpisodes(workers=8), "
                     f"got {backend!r}")
