r"""The schedules of :class:`~spiral_ppl.inference.SMC`: which particles survive, how many
there are at each step, and how sharply each partial canvas is scored.

- :func:`systematic_resample`: ancestors in proportion to the weights, with one uniform
  offset per target (Kitagawa 1996), so each particle's copies stay within one of their
  expectation;
- :func:`particle_schedule`: particles per step that spend a render budget evenly;
- :func:`tempering_schedule`: the exponents :math:`\beta_1 \dots \beta_T` of the partial
  canvases' likelihoods, geometric from a first exponent up to 1 or given one per step;
- :func:`cooling_schedule`: after the last step, how many particles are cooled, through
  which likelihood exponents above 1, with how many moves each.

>>> particle_schedule(renders=100, steps=3)
[34, 33, 33]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch


def systematic_resample(log_weights: torch.Tensor, count: int) -> torch.Tensor:
    """Ancestor indices ``(count, B)`` drawn in proportion to ``exp(log_weights)`` ``(N, B)``.

    Systematic resampling: one uniform offset per target and ``count`` evenly spaced points
    on the weights' cumulative sum, which keeps the number of copies of each particle
    within one of its expectation.
    """
    total = log_weights.logsumexp(0)
    if not bool(torch.isfinite(total).all()):
        dead = (~torch.isfinite(total)).nonzero().flatten().tolist()
        raise ValueError(
            f"every particle of targets {dead} has zero (or undefined) weight: the proposal drew actions the prior "
            "rules out, or the weights became NaN; give the proposal support only where the prior has it"
        )
    probs = (log_weights - total).exp().T  # (B, N)
    cumulative = probs.cumsum(-1)
    points = (torch.rand(probs.shape[0], 1, device=probs.device) + torch.arange(count, device=probs.device)) / count
    ancestors = torch.searchsorted(cumulative, points * cumulative[:, -1:])
    return ancestors.clamp_(max=probs.shape[1] - 1).T


def check_tempering(tempering: float | Sequence[float] | None) -> float | tuple[float, ...] | None:
    """``tempering`` as :class:`SMC` takes it: ``None``, a first exponent in (0, 1], or exponents in [0, 1]."""
    def exponent(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    if tempering is None:
        return None
    if exponent(tempering) and tempering > 0:
        return float(tempering)
    if isinstance(tempering, Sequence) and not isinstance(tempering, str) and tempering \
            and all(exponent(value) for value in tempering) and tempering[-1] == 1:
        return tuple(float(value) for value in tempering)
    raise ValueError(
        "tempering must be None (no tempering), the first step's exponent in (0, 1] (then geometric up to 1), "
        f"or one exponent in [0, 1] per step ending with 1, got {tempering!r}"
    )


def tempering_schedule(tempering: float | Sequence[float] | None, steps: int) -> list[float]:
    """The exponents :math:`\\beta_1 \\dots \\beta_T` of the partial canvases' likelihoods.

    A number :math:`\\beta_1` gives the geometric schedule :math:`\\beta_t =
    \\beta_1^{(T - t) / (T - 1)}`, which multiplies the exponent by the same factor at
    every step and reaches 1 at the last.

    >>> tempering_schedule(0.01, 3)
    [0.01, 0.1, 1.0]
    """
    tempering = check_tempering(tempering)
    if tempering is None:
        return [1.0] * steps
    if isinstance(tempering, float):
        return [tempering ** ((steps - 1 - t) / (steps - 1)) if steps > 1 else 1.0 for t in range(steps)]
    if len(tempering) != steps:
        raise ValueError(f"tempering has {len(tempering)} exponents; the program has {steps} steps, one each")
    return list(tempering)


def particle_schedule(renders: int, steps: int, moves: int = 0, per_particle: int = 1) -> list[int]:
    """Particles ``N_t`` per step that spend at most ``renders``: as many and as even as possible.

    Step ``t`` costs ``per_particle`` renders for each of its ``N_t`` particles (its canvas,
    and those a proposal draws itself); the population is then resampled to ``N_{t+1}``
    and the ``moves`` rejuvenation moves of step ``t`` run on those (the last step's on
    ``N_{T-1}``). One more particle for the first ``e < steps`` steps therefore costs
    ``per_particle * e + moves * (e - 1)`` renders.

    >>> particle_schedule(renders=100, steps=3, per_particle=3)  # 11 * 9 = 99, one render spare
    [11, 11, 11]
    """
    particles, spare = divmod(renders, steps * (per_particle + moves))
    extra_steps = min((spare + moves) // (per_particle + moves), steps - 1) if spare else 0
    return [particles + (t < extra_steps) for t in range(steps)]


MOVES_PER_PARTICLE = 256
"""How many more moves than particles a cooling stage runs (see :func:`cooling_schedule`)."""


@dataclass(frozen=True)
class CoolingSchedule:
    """The cooling stages of an :class:`~spiral_ppl.inference.SMC` run (see :func:`cooling_schedule`).

    :ivar exponents: the likelihood exponents of the stages, increasing, all above 1.
    :ivar particles: the particles cooled per target.
    :ivar moves: Metropolis-Hastings moves of every particle per stage.
    """

    exponents: tuple[float, ...]
    particles: int
    moves: int

    @property
    def renders(self) -> int:
        """Renders per target the stages spend: one per particle and move."""
        return len(self.exponents) * self.particles * self.moves


NO_COOLING = CoolingSchedule((), 0, 0)
"""The schedule of a run that is not cooled."""


def cooling_schedule(renders: int, final_exponent: float, stages: int) -> CoolingSchedule:
    r"""Stages that spend at most ``renders`` cooling particles to ``final_exponent``.

    The exponents rise geometrically, :math:`\beta_k = \beta_K^{k / K}` for
    :math:`k = 1 \dots K`. Each stage's ``r`` renders go to few particles with long chains,
    :math:`\sqrt{r / 256}` particles of :math:`\sqrt{256 r}` moves each: a cold likelihood
    is crossed by many small accepted steps, so chain length buys more l2 than particles
    do (on planted stroke programs, 256 moves per particle beat 1 and 1,024), while a few
    particles keep resampling from leaving a target on one mode. A budget too small for a
    stage of one particle and one move gives no stages.

    >>> cooling_schedule(renders=20_000, final_exponent=16, stages=4)
    CoolingSchedule(exponents=(2.0, 4.0, 8.0, 16.0), particles=4, moves=1250)
    """
    per_stage = renders // stages
    if per_stage < 1:
        return NO_COOLING
    particles = max(1, round(math.sqrt(per_stage / MOVES_PER_PARTICLE)))
    moves = per_stage // particles
    exponents = tuple(float(final_exponent) ** (k / stages) for k in range(1, stages + 1))
    return CoolingSchedule(exponents, particles, moves)
