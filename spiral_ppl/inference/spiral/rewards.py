r"""Rewards of SPIRAL episodes: the critic's score or the l2 to the target, and penalties.

For an episode of ``T`` steps with canvases :math:`x_1, \dots, x_T` and a score
:math:`s(x)` (the critic :math:`D(x)`, or :math:`-\lVert x - x^\ast \rVert^2 / n` for the
l2 reward of a conditional agent):

- terminal reward (Ganin et al. 2018): :math:`r_t = 0` for :math:`t < T` and
  :math:`r_T = s(x_T)`;
- temporal credit assignment (Mellor et al. 2019): :math:`r_t = s(x_t) - s(x_{t-1})`, with
  :math:`x_0` the empty observation (zeros); the rewards telescope to
  :math:`s(x_T) - s(x_0)`, but each step is credited with its own improvement;
- penalties: ``new_stroke`` costs each step that starts a new stroke sequence (a drawing
  step, ``flag = 1``, at the start or after a jump, ``flag = 0``); it needs a component
  named ``flag`` with two values, the paper's paint action. ``empty_canvas`` costs an
  episode whose final canvas is the program's empty canvas.

Returns are the discounted sums :math:`R_t = \sum_{k \ge t} \gamma^{k-t} r_k`.

Normalised rewards (``reward.normalise``) are divided by a running standard deviation
:math:`\sigma` of the episodes' total rewards :math:`\sum_t r_t` (an exponential moving
average over updates, :class:`RewardNormaliser`), so the advantages have about unit scale
whatever the reward's units: an l2 of 0.03 and a critic score of 30 meet the same entropy
cost and learning rate. The scale is not shifted (the value baseline does that), and it
changes slowly, so the policy's objective changes slowly too. Penalties are subtracted after
normalisation, so they are in units of :math:`\sigma`.

Example::

    >>> import torch
    >>> discounted_returns(torch.tensor([[0.0, 0.0, 1.0]]), discount=0.5)
    tensor([[0.2500, 0.5000, 1.0000]])
    >>> new_stroke_starts(torch.tensor([[1, 1, 0, 1]]))
    tensor([[1., 0., 0., 1.]])
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from spiral_ppl.renderers.base import Component

#: ``score(canvases (B, C, H, W)) -> (B,)``: how good a canvas is (higher is better).
Score = Callable[[torch.Tensor], torch.Tensor]


def step_rewards(score: Score, canvases: Sequence[torch.Tensor | None], nothing_drawn: torch.Tensor,
                 *, temporal: bool) -> torch.Tensor:
    """``(B, T)`` rewards from the scores of the canvases (terminal or temporal, above)."""
    final = canvases[-1]
    if final is None:
        raise ValueError("the final canvas of the episode was not drawn; rewards need it")
    steps = len(canvases)
    if not temporal:
        rewards = torch.zeros(final.shape[0], steps, device=final.device)
        rewards[:, -1] = score(final)
        return rewards
    if any(canvas is None for canvas in canvases):
        raise ValueError("temporal rewards need every intermediate canvas; roll out with observe_all=True")
    scores = score(torch.cat([nothing_drawn, *canvases])).view(steps + 1, -1)
    return (scores[1:] - scores[:-1]).T


def new_stroke_starts(flags: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` 1.0 where a drawing step starts a stroke sequence (at t = 0 or after a jump)."""
    drawing = flags == 1
    after_jump = torch.ones_like(drawing)
    after_jump[:, 1:] = ~drawing[:, :-1]
    return (drawing & after_jump).float()


def check_new_stroke_penalty(action_space: Sequence[Component]) -> None:
    """The new-stroke penalty needs a two-valued ``flag`` component (1 draws, 0 jumps)."""
    flag = next((c for c in action_space if c.name == "flag"), None)
    if flag is None or flag.size != 2 or flag.kind != "scalar":
        names = [c.name for c in action_space]
        raise ValueError(
            "new_stroke_penalty needs a scalar component named 'flag' with 2 values (1 draws, 0 jumps), "
            f"as the paint action has; this program's components are {names}. Set new_stroke_penalty=0."
        )


def empty_canvases(final: torch.Tensor, empty: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """``(B,)`` 1.0 where a final canvas equals the program's empty canvas."""
    return ((final - empty).abs().flatten(1).amax(1) <= tolerance).float()


class RewardNormaliser:
    r"""A running standard deviation of episodes' total rewards, to divide rewards by.

    Means :math:`m_1, m_2` of the total reward and its square are exponential moving averages
    with weight ``decay``, bias-corrected as Adam's moments are (so the first batch counts
    fully): :math:`\sigma = \sqrt{\max(m_2 - m_1^2, 0)} + \epsilon`.

    Example::

        >>> normaliser = RewardNormaliser()
        >>> rewards = torch.tensor([[0.0, 0.02], [0.0, 0.04]])   # tiny l2 rewards
        >>> normaliser(rewards)            # totals 0.02 and 0.04: sigma = 0.01
        tensor([[0.0000, 2.0000],
                [0.0000, 4.0000]])
    """

    def __init__(self, decay: float = 0.99, epsilon: float = 1e-8) -> None:
        self.decay, self.epsilon = decay, epsilon
        self.moments = torch.zeros(2, dtype=torch.float64)
        self.batches = 0

    @property
    def std(self) -> float:
        r"""The current :math:`\sigma` (1 before any batch)."""
        if self.batches == 0:
            return 1.0
        first, second = (self.moments / (1 - self.decay ** self.batches)).tolist()
        return math.sqrt(max(second - first * first, 0.0)) + self.epsilon

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        r"""``rewards`` ``(B, T)`` divided by :math:`\sigma`, after counting their totals in it."""
        totals = rewards.detach().sum(1).double().cpu()
        batch = torch.stack([totals.mean(), totals.pow(2).mean()])
        self.moments = self.decay * self.moments + (1 - self.decay) * batch
        self.batches += 1
        return rewards / self.std

    def state_dict(self) -> dict:
        return {"moments": self.moments.tolist(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.moments = torch.tensor(state["moments"], dtype=torch.float64)
        self.batches = int(state["batches"])


def discounted_returns(rewards: torch.Tensor, discount: float | torch.Tensor) -> torch.Tensor:
    """``(B, T)`` returns ``R_t = r_t + discount_t * R_{t+1}`` (``R_T = 0``).

    ``discount`` is a number, or ``(B, T)`` per-step discounts (V-trace's ``gamma * c_t``).
    """
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[:, -1])
    per_step = isinstance(discount, torch.Tensor)
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + (discount[:, t] if per_step else discount) * running
        returns[:, t] = running
    return returns
