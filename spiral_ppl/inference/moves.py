r"""Metropolis-Hastings moves on the discrete sites of programs.

A move picks a *block* of sites of each program :math:`a`, draws fresh values for it from a
proposal :math:`q` to form :math:`a'`, and accepts :math:`a'` with probability

.. math::

    \alpha = \min\Big(1, \frac{p(a')\, p(x \mid a')\, q(a_{\mathrm{block}})}
                             {p(a)\, p(x \mid a)\, q(a'_{\mathrm{block}})}\Big).

Blocks:

- ``"step"``: every component of one step ``t`` (its flag or presence included), the
  blocked move of the paper's MCMC baseline;
- ``"site"``: one component of one step (single-site Metropolis-Hastings);
- ``"mixed"``: a step block or a single site, with equal probability.

Fresh values come from the program's prior for those sites (``proposal="prior"``: an
independence proposal, so the prior terms cancel and :math:`\alpha` is the likelihood
ratio) or uniformly over each component's values (``proposal="uniform"``). A program whose
priors are not fixed per step (they depend on earlier sites, or sites are masked) offers
fixed tables of full support instead (:meth:`Program.proposal_table
<spiral_ppl.programs.Program.proposal_table>`), and :math:`\alpha` keeps every term. The block is
chosen uniformly and independently of the current values, so every move is a mixture of
kernels each reversible with respect to the posterior, and leaves it invariant.

Everything is vectorised: programs carry any batch shape (chains, particles, targets), and
every program gets its own block.

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.moves import BlockProposal
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3)
    >>> actions = {c.name: torch.zeros(5, 2, 3, dtype=torch.long) for c in prog.action_space}
    >>> proposed, log_q_ratio = BlockProposal(prog, blocks="step")(actions)
    >>> changed = torch.stack([(proposed[n] != actions[n]) for n in actions]).any(0)  # (5, 2, 3)
    >>> bool((changed.sum(-1) <= 1).all())  # at most one step of each program changes
    True

References: Metropolis, Rosenbluth, Rosenbluth, Teller & Teller, "Equation of state
calculations by fast computing machines", J. Chem. Phys. 1953; Hastings, "Monte Carlo
sampling methods using Markov chains and their applications", Biometrika 1970.
"""

from __future__ import annotations

from typing import Mapping

import torch

from spiral_ppl.checks import choice
from spiral_ppl.programs.base import Program, require_fixed_structure

BLOCKS = ("step", "site", "mixed")
PROPOSALS = ("prior", "uniform")


class BlockProposal:
    """Draws fresh values for one block of sites of every program in a batch.

    :param program: the program whose sites are moved; its action space and prior are read.
    :param blocks: ``"step"``, ``"site"`` or ``"mixed"`` (see the module docstring).
    :param proposal: ``"prior"`` or ``"uniform"``.

    Calling it on programs ``{name: LongTensor[*batch, T]}`` (any ``T <= program.steps``,
    so prefixes work too) returns the proposed programs and
    :math:`\\log q(a_{\\mathrm{block}}) - \\log q(a'_{\\mathrm{block}})`, shape ``batch``.
    """

    def __init__(self, program: Program, *, blocks: str = "step", proposal: str = "prior") -> None:
        if not isinstance(program, Program):
            raise TypeError(f"program must be a spiral_ppl.programs.Program, got {type(program).__name__}")
        require_fixed_structure(program, "block moves (their blocks are steps)")
        self.program = program
        self.blocks = choice("blocks", blocks, BLOCKS)
        self.proposal = choice("proposal", proposal, PROPOSALS)

    def __call__(self, actions: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        space = self.program.action_space
        reference = actions[space[0].name]
        batch_shape, steps, device = reference.shape[:-1], reference.shape[-1], reference.device
        block_step = torch.randint(steps, batch_shape, device=device)
        # Which components of the chosen step are redrawn, (K, *batch): all of them for a
        # step block, one for a single-site move.
        if self.blocks == "step":
            moved = torch.ones((len(space), *batch_shape), dtype=torch.bool, device=device)
        else:
            site = torch.randint(len(space), batch_shape, device=device)
            moved = site == torch.arange(len(space), device=device).view(-1, *([1] * len(batch_shape)))
            if self.blocks == "mixed":
                moved = moved | (torch.rand(batch_shape, device=device) < 0.5)
        where = block_step.unsqueeze(-1)
        old = {c.name: actions[c.name].gather(-1, where).squeeze(-1) for c in space}
        if self.proposal == "prior":
            # Every component of every program in one draw; only the moved ones are kept.
            table = self.program.proposal_table(device)
            fresh = table.sample(block_step)
            log_q_ratio = torch.where(
                moved, table.site_log_probs(block_step, old) - table.site_log_probs(block_step, fresh), 0.0
            ).sum(0)
        else:
            fresh = {c.name: torch.randint(c.size, batch_shape, device=device) for c in space}
            log_q_ratio = torch.zeros(batch_shape, device=device)
        proposed = {}
        for index, component in enumerate(space):
            value = torch.where(moved[index], fresh[component.name], old[component.name])
            proposed[component.name] = actions[component.name].scatter(-1, where, value.unsqueeze(-1))
        return proposed, log_q_ratio


def metropolis_accept(log_ratio: torch.Tensor) -> torch.Tensor:
    """Accept each proposal with probability ``min(1, exp(log_ratio))``; returns a bool mask.

    A NaN ratio (both states impossible) is rejected.
    """
    return torch.rand_like(log_ratio).log() < log_ratio


def select_actions(
    accept: torch.Tensor, proposed: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Programs where ``accept`` (shape ``batch``) holds taken from ``proposed``, else ``current``."""
    return {name: torch.where(accept.unsqueeze(-1), proposed[name], value) for name, value in current.items()}
