r"""V-trace: value targets and advantages for episodes played by an older policy.

When rollout workers run ahead of the learner (:mod:`~spiral_ppl.inference.spiral.distributed`),
an episode was sampled by a *behaviour* policy :math:`\mu` (the weights the worker held)
while the learner improves a newer *target* policy :math:`\pi`. V-trace (Espeholt et al.
2018, IMPALA) corrects for this lag with truncated importance weights

.. math::

    \rho_t = \min\!\Big(\bar\rho, \frac{\pi(a_t \mid x_t)}{\mu(a_t \mid x_t)}\Big), \qquad
    c_t = \min\!\Big(\bar c, \frac{\pi(a_t \mid x_t)}{\mu(a_t \mid x_t)}\Big).

With :math:`\delta_t = \rho_t\,(r_t + \gamma V(x_{t+1}) - V(x_t))` the value targets are

.. math::

    v_s = V(x_s) + \sum_{t \ge s} \gamma^{t-s} \Big(\prod_{i=s}^{t-1} c_i\Big)\, \delta_t,

computed backwards as :math:`v_s - V(x_s) = \delta_s + \gamma c_s\,(v_{s+1} - V(x_{s+1}))`,
and the policy-gradient advantage is :math:`\rho_s\,(r_s + \gamma v_{s+1} - V(x_s))`.
A SPIRAL episode ends after its last step, so :math:`V(x_T) = v_T = 0`.

On-policy (:math:`\pi = \mu`, :math:`\bar\rho, \bar c \ge 1`) every weight is 1, the sum
telescopes, :math:`v_s` is the discounted return :math:`R_s`, and the advantage is
:math:`R_s - V(x_s)`: exactly A2C's, which is why the local learner and the distributed one
share one loss.

Reference: Espeholt et al., "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
Actor-Learner Architectures", ICML 2018 (Remark 1 and Section 4).

Example::

    >>> import torch
    >>> rewards, values = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    >>> targets = vtrace(torch.zeros(1, 2), rewards, values, discount=1.0)
    >>> targets.values.tolist(), targets.advantages.tolist()  # on-policy: returns and A2C advantages
    ([[1.0, 1.0]], [[0.5, 0.5]])
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from spiral_ppl.inference.spiral.rewards import discounted_returns


class VTraceTargets(NamedTuple):
    """What the learner's loss needs, all ``(B, T)`` and free of gradients."""

    values: torch.Tensor  #: :math:`v_s`, the regression targets of the value head
    advantages: torch.Tensor  #: :math:`\rho_s (r_s + \gamma v_{s+1} - V(x_s))`, weights of the log-probabilities
    rhos: torch.Tensor  #: the truncated importance weights :math:`\rho_s`


def vtrace(
    log_rhos: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    *,
    discount: float,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
) -> VTraceTargets:
    r"""V-trace targets of a batch of finished episodes.

    :param log_rhos: ``(B, T)`` :math:`\log \pi(a_t \mid x_t) - \log \mu(a_t \mid x_t)`.
    :param rewards: ``(B, T)`` rewards :math:`r_t`.
    :param values: ``(B, T)`` the value head's :math:`V(x_t)` under the current weights.
    :param discount: :math:`\gamma`.
    :param rho_clip: :math:`\bar\rho` (1 in IMPALA).
    :param c_clip: :math:`\bar c` (1 in IMPALA); :math:`\bar c \le \bar\rho`.
    """
    if log_rhos.shape != rewards.shape or rewards.shape != values.shape or rewards.dim() != 2:
        raise ValueError(
            f"log_rhos, rewards and values must all be (B, T), got {tuple(log_rhos.shape)}, "
            f"{tuple(rewards.shape)} and {tuple(values.shape)}"
        )
    if not 0 < c_clip <= rho_clip:
        raise ValueError(f"V-trace needs 0 < c_clip <= rho_clip, got c_clip={c_clip}, rho_clip={rho_clip}")
    with torch.no_grad():
        log_rhos, rewards, values = log_rhos.float(), rewards.float(), values.float()
        ratios = log_rhos.exp()
        rhos, cs = ratios.clamp(max=rho_clip), ratios.clamp(max=c_clip)
        next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # V(x_T) = 0
        deltas = rhos * (rewards + discount * next_values - values)
        # v_s - V(x_s) follows the recursion of a discounted return, with discounts gamma c_s.
        targets = values + discounted_returns(deltas, discount * cs)
        next_targets = torch.cat([targets[:, 1:], torch.zeros_like(targets[:, :1])], dim=1)  # v_T = 0
        advantages = rhos * (rewards + discount * next_targets - values)
    return VTraceTargets(targets, advantages, rhos)
