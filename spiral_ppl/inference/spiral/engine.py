r"""A SPIRAL agent as an inference engine: passes, the best of them, and the guided SMC.

One *pass* rolls the policy out once on each target and costs :attr:`Spiral.renders_per_pass`
renders (every step's canvas, or the last one for a blind agent). Given a budget of
:math:`N` renders per target the engine runs :math:`\lfloor N / \text{pass} \rfloor` passes
and keeps, per target, the program whose final canvas has the lowest l2:

.. math::

    \hat a = \arg\min_{i \le n} \lVert \mathrm{render}(a^{(i)}) - x^\ast \rVert^2, \qquad
    a^{(i)} \sim \pi_\tau(\cdot \mid x^\ast),

with the first pass greedy when ``decoding.greedy_first``. The policy is also a step proposal
for SMC (:class:`~spiral_ppl.inference.spiral.SpiralProposal`), and :func:`guided_smc` builds
that SMC with the intermediate targets and tempering saved in the agent's decoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from spiral_ppl import checks
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.result import BestSoFar, Curve, Result
from spiral_ppl.inference.smc import SMC
from spiral_ppl.inference.spiral.rollout import Episode, most_probable, rollout
from spiral_ppl.programs.base import Program, mean_squared_error

if TYPE_CHECKING:
    from spiral_ppl.inference.spiral.agent import Spiral


def decode(agent: "Spiral", prog: Program, targets: torch.Tensor, greedy: bool) -> Episode:
    """One pass of ``prog`` on each of ``targets``: greedy, or sampled at the decoding's temperature."""
    choice = {"choose": most_probable} if greedy else {"temperature": agent.decoding.temperature}
    with agent.learner.autocast():
        return rollout(agent.policy, prog, targets.shape[0], targets if agent.conditional else None,
                       blind=agent.blind, **choice)


def best_of_passes(agent: "Spiral", prog: Program, images: torch.Tensor, budget: Budget) -> Result:
    """As many passes as ``budget`` pays for on each image; the best of them (the engine's ``infer``)."""
    agent.check_program(prog)
    passes = budget.renders // agent.renders_per_pass
    if passes < 1:
        raise ValueError(
            f"one pass of this agent costs {agent.renders_per_pass} renders per target; "
            f"the budget of {budget.renders} is smaller: give sp.Budget(renders={agent.renders_per_pass}) or more"
        )
    # The policy computes in float32: float64 (or float16) images in [0, 1] are the same targets.
    targets = images.to(device=agent.device, dtype=torch.float32)
    count = targets.shape[0]
    # Every pass's l2 is kept for the curve (and copied into it at the end).
    checks.fits_in_memory(f"{passes:,} passes of this agent on {count} targets", passes * (12 * count + 8),
                          remedy="give a smaller budget")
    per_rollout = max(1, agent.max_batch // count)
    # Rollouts of (repeats, greedy): the greedy first pass alone, then the sampled passes in
    # batches of at most max_batch episodes.
    chunks = [(1, True)] if agent.decoding.greedy_first else []
    sampled = passes - len(chunks)
    chunks += [(min(per_rollout, sampled - start), False) for start in range(0, sampled, per_rollout)]
    sample_l2, best = [], BestSoFar(count, agent.device)
    for repeats, greedy in chunks:
        episode = decode(agent, prog, targets.repeat(repeats, 1, 1, 1), greedy)
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
        curve=Curve.from_samples(torch.cat(sample_l2).cpu(), renders_per_sample=agent.renders_per_pass),
    )


def one_pass(agent: "Spiral", targets: torch.Tensor) -> torch.Tensor:
    """Final canvases of one pass on ``targets``, decoded as the first pass of :func:`best_of_passes`,
    leaving the global random streams as they were (training resumes identically)."""
    targets = agent.prog.check_images(targets, name="targets").to(device=agent.device, dtype=torch.float32)
    devices = [agent.device] if agent.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        episode = decode(agent, agent.prog, targets, greedy=agent.decoding.greedy_first)
    return episode.final.float()


class Samples(NamedTuple):
    """What an unconditional agent paints: images and the programs that paint them."""

    images: torch.Tensor  #: ``(n, C, H, W)`` final canvases
    programs: dict[str, torch.Tensor]  #: ``{component: (n, steps)}`` actions, as ``prog.render`` takes them


def sample(agent: "Spiral", count: int, seed: int | None = None) -> Samples:
    """``count`` programs drawn from an unconditional policy (a fresh noise vector each) at the
    decoding's temperature, and their renders, in rollouts of at most ``agent.max_batch``.
    With ``seed`` the draws are reproducible and the global random streams are left as they were."""
    if agent.conditional:
        raise ValueError("sample() draws from an unconditional agent (conditional=False); a conditional agent "
                         "reconstructs targets: use agent.infer(prog, images, budget) or agent.one_pass(images)")
    checks.positive_int("count", count, hint="images to sample")
    devices = [agent.device] if agent.device.type == "cuda" else []
    images, programs = [], []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), torch.no_grad():
        if seed is not None:
            torch.manual_seed(checks.non_negative_int("seed", seed))
        for start in range(0, count, agent.max_batch):
            with agent.learner.autocast():
                episode = rollout(agent.policy, agent.prog, min(agent.max_batch, count - start),
                                  temperature=agent.decoding.temperature)
            images.append(episode.final.float())
            programs.append(episode.actions)
    return Samples(torch.cat(images), {name: torch.cat([part[name] for part in programs])
                                       for name in programs[0]})


def guided_smc(agent: "Spiral", **options: Any) -> SMC:
    """SMC with the agent's policy as its step proposal, and the decoding's SMC settings: the
    policy's particles alone, without the search defaults' rejuvenation moves and cooling
    (``options`` may add them).

    >>> import spiral_ppl as sp
    >>> from spiral_ppl.inference.spiral import Decoding
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> agent = sp.inference.Spiral(prog, device="cpu", decoding=Decoding(smc_intermediate="proposal",
    ...                                                                   smc_tempering=0.01))
    >>> engine = agent.smc(ess_threshold=1.0)
    >>> engine.name, engine.intermediate, engine.tempering, engine.ess_threshold
    ('smc-guide', 'proposal', 0.01, 1.0)
    """
    options = {"intermediate": agent.decoding.smc_intermediate, "tempering": agent.decoding.smc_tempering,
               "rejuvenation_moves": 0, "cooling": None, **options}
    return SMC(agent.proposal, **options)
