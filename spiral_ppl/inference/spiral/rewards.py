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

Example::

    >>> import torch
    >>> discounted_returns(torch.tensor([[0.0, 0.0, 1.0]]), discount=0.5)
    tensor([[0.2500, 0.5000, 1.0000]])
    >>> new_stroke_starts(torch.tensor([[1, 1, 0, 1]]))
    tensor([[1., 0., 0., 1.]])
"""

from __future__ import annotations

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
