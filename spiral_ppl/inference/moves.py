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

Two more kinds of move search where the blocks above rarely look:

- :class:`LocalProposal`: one location moves by up to ``radius`` grid cells in each
  direction, or one ordered component (:attr:`Component.ordered
  <spiral_ppl.renderers.Component.ordered>`: a size, a pressure, a colour level) by one
  value. The proposal is symmetric, and one that leaves the grid or the values is rejected,
  so :math:`\alpha` is the ratio of the targets.
- :class:`ResidualProposal`: a data-driven step block. The residual of the current canvas,
  :math:`r = (x - c(a))^2` summed over channels, is averaged over each location
  component's grid cells; the step's locations are drawn from those averages mixed with a
  uniform (so every cell stays possible), and its other components from the prior. The
  reverse move reads the residual of the *proposed* canvas, so its density
  :math:`q_{a'}(a_{\mathrm{block}})` is known only after rendering: :meth:`Proposal.log_q_ratio`
  takes that canvas. It works for any program whose components include locations, from the
  images and the grids alone.

:class:`MoveMixture` picks one kind of move for each program independently of its state
(with fixed weights), so the mixture, like each kind, leaves the posterior invariant.

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

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from spiral_ppl import checks
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


# -- local and data-driven moves, and their mixture ------------------------------------------------------


@dataclass
class Proposal:
    """Proposed programs and what the Hastings ratio needs of the proposal.

    :ivar actions: the proposed programs ``{name: LongTensor[*batch, T]}``.
    :ivar log_q_known: :math:`\\log q(a \\mid a') - \\log q(a' \\mid a)` as far as it is
        known before the proposed canvases are drawn, shape ``batch`` (``-inf`` for a
        proposal that left the grid or the values, which must be rejected).
    :ivar reverse: for moves whose reverse density reads the proposed canvases, a function
        of them giving the rest of the ratio; ``None`` when nothing is left.
    """

    actions: dict[str, torch.Tensor]
    log_q_known: torch.Tensor
    reverse: Callable[[torch.Tensor], torch.Tensor] | None = None

    def log_q_ratio(self, proposed_canvas: torch.Tensor) -> torch.Tensor:
        """The whole :math:`\\log q(a \\mid a') - \\log q(a' \\mid a)`, given the proposed canvases ``(*batch, C, H, W)``."""
        if self.reverse is None:
            return self.log_q_known
        return self.log_q_known + self.reverse(proposed_canvas)


def _replace_site(actions: Mapping[str, torch.Tensor], name: str, step: torch.Tensor,
                  value: torch.Tensor) -> dict[str, torch.Tensor]:
    """``actions`` with component ``name`` of step ``step`` (shape ``batch``) set to ``value``."""
    proposed = dict(actions)
    proposed[name] = actions[name].scatter(-1, step.unsqueeze(-1), value.unsqueeze(-1))
    return proposed


class LocalProposal:
    """Moves one location by up to ``radius`` cells along each axis, or one ordered component by
    one value (see the module docstring). Symmetric: :math:`\\log q(a \\mid a') - \\log q(a' \\mid a)`
    is 0, or ``-inf`` where the move leaves the grid or the values.

    :param program: whose locations and ordered components are moved.
    :param radius: the largest step along each grid axis.
    """

    def __init__(self, program: Program, *, radius: int = 2) -> None:
        require_fixed_structure(program, "local moves")
        self.program = program
        self.radius = checks.positive_int("radius", radius, hint="grid cells a location may move along each axis")
        self.movable = locally_movable(program)
        if not self.movable:
            raise ValueError(f"{program!r} has no location or ordered component for local moves to move; mark "
                             "sizes and levels Component(..., ordered=True), or give local moves no weight")

    def __call__(self, actions: Mapping[str, torch.Tensor]) -> Proposal:
        reference = actions[self.movable[0].name]
        batch_shape, steps, device = reference.shape[:-1], reference.shape[-1], reference.device
        step = torch.randint(steps, batch_shape, device=device)
        which = torch.randint(len(self.movable), batch_shape, device=device)
        proposed, valid = dict(actions), torch.ones(batch_shape, dtype=torch.bool, device=device)
        for index, component in enumerate(self.movable):
            chosen = which == index
            old = actions[component.name].gather(-1, step.unsqueeze(-1)).squeeze(-1)
            if component.kind == "location":
                side = component.grid_size
                # A uniform offset in the square of radius r, the offset (0, 0) left out.
                offsets = (2 * self.radius + 1) ** 2 - 1
                flat = torch.randint(offsets, batch_shape, device=device)
                flat = flat + (flat >= offsets // 2).long()
                dy, dx = flat // (2 * self.radius + 1) - self.radius, flat % (2 * self.radius + 1) - self.radius
                y, x = old // side + dy, old % side + dx
                inside = (y >= 0) & (y < side) & (x >= 0) & (x < side)
                new = y.clamp(0, side - 1) * side + x.clamp(0, side - 1)
            else:
                new = old + 2 * torch.randint(2, batch_shape, device=device) - 1
                inside = (new >= 0) & (new < component.size)
                new = new.clamp(0, component.size - 1)
            # Programs whose move left the grid keep their value (they are rejected anyway).
            new = torch.where(chosen & inside, new, old)
            proposed = _replace_site(proposed, component.name, step, new)
            valid = valid & (~chosen | inside)
        log_q = torch.where(valid, 0.0, -math.inf).to(torch.float32)
        return Proposal(proposed, log_q)


def residual_cell_log_probs(canvas: torch.Tensor, images: torch.Tensor, side: int, uniform: float) -> torch.Tensor:
    """Log probabilities ``(*batch, side * side)`` of the cells of a ``side``-cell grid, in
    proportion to the squared residual of ``canvas`` ``(*batch, C, H, W)`` against ``images``
    averaged over each cell, mixed with a uniform of weight ``uniform`` (all cells alike where
    the residual is zero)."""
    residual = (images - canvas).pow(2).sum(-3)  # (*batch, H, W)
    batch_shape = residual.shape[:-2]
    pooled = F.adaptive_avg_pool2d(residual.reshape(-1, 1, *residual.shape[-2:]), side).reshape(*batch_shape, -1)
    total = pooled.sum(-1, keepdim=True)
    share = torch.where(total > 0, pooled / total.clamp_min(1e-30), 1.0 / pooled.shape[-1])
    return ((1 - uniform) * share + uniform / pooled.shape[-1]).log()


def residual_step(program: Program, step: torch.Tensor, canvas: torch.Tensor, images: torch.Tensor, uniform: float,
                  values: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Draw (or, given ``values``, score) one step's action of every program from the residual
    proposal: locations from :func:`residual_cell_log_probs` of ``canvas`` ``(*batch, C, H, W)``,
    the other components from :meth:`Program.proposal_table <spiral_ppl.programs.Program.proposal_table>`
    at steps ``step`` ``(*batch)``. Returns the action ``{name: LongTensor[*batch]}`` and its log
    proposal density ``(*batch)``."""
    space = program.action_space
    table = program.proposal_table(images.device)
    cells = {c.grid_size: residual_cell_log_probs(canvas, images, c.grid_size, uniform)
             for c in space if c.kind == "location"}
    if not cells:
        raise ValueError(f"{program!r} has no location component for a residual proposal to place; use another "
                         "proposal, or give residual moves no weight")
    if values is None:
        values = table.sample(step)
        for component in space:
            if component.kind == "location":
                values[component.name] = torch.distributions.Categorical(logits=cells[component.grid_size]).sample()
    others = [index for index, c in enumerate(space) if c.kind != "location"]
    log_q = table.site_log_probs(step, values)[others].sum(0)
    for component in space:
        if component.kind == "location":
            log_q = log_q + cells[component.grid_size].gather(-1, values[component.name].unsqueeze(-1)).squeeze(-1)
    return dict(values), log_q


class ResidualProposal:
    """A data-driven step block: a step redrawn by :func:`residual_step`, locations where the
    canvas misses the target (see the module docstring).

    :param program: whose steps are redrawn; it must have a location component.
    :param uniform: the weight of the uniform distribution mixed into each location's, in
        (0, 1]; it keeps every cell possible, so the move can always be reversed.
    """

    def __init__(self, program: Program, *, uniform: float = 0.2) -> None:
        require_fixed_structure(program, "residual moves")
        self.program = program
        self.uniform = check_uniform_share(uniform)
        if not any(c.kind == "location" for c in program.action_space):
            raise ValueError(f"{program!r} has no location component for residual moves to place; give "
                             "residual moves no weight")

    def cell_log_probs(self, canvas: torch.Tensor, images: torch.Tensor, side: int) -> torch.Tensor:
        """Log proposal probabilities ``(*batch, side * side)`` of the cells of a ``side``-cell grid
        (see :func:`residual_cell_log_probs`)."""
        return residual_cell_log_probs(canvas, images, side, self.uniform)

    def __call__(self, actions: Mapping[str, torch.Tensor], canvas: torch.Tensor, images: torch.Tensor) -> Proposal:
        space = self.program.action_space
        reference = actions[space[0].name]
        step = torch.randint(reference.shape[-1], reference.shape[:-1], device=reference.device)
        old = {c.name: actions[c.name].gather(-1, step.unsqueeze(-1)).squeeze(-1) for c in space}
        fresh, log_q_forward = residual_step(self.program, step, canvas, images, self.uniform)
        proposed = dict(actions)
        for component in space:
            proposed = _replace_site(proposed, component.name, step, fresh[component.name])

        def reverse(proposed_canvas: torch.Tensor) -> torch.Tensor:
            # The old step under the residual proposal of the proposed canvases.
            return residual_step(self.program, step, proposed_canvas, images, self.uniform, values=old)[1]

        return Proposal(proposed, -log_q_forward, reverse)


def check_uniform_share(uniform: float) -> float:
    """The weight of the uniform part of each location's residual proposal, in (0, 1]."""
    return checks.number_in("uniform", uniform, 0, 1, open_low=True,
                            hint="weight of the uniform part of each location's proposal")


def locally_movable(program: Program) -> list:
    """The components of ``program`` a local move can change: locations and ordered
    components of more than one value (a component of one value has nowhere to move)."""
    return [c for c in program.action_space if (c.kind == "location" or c.ordered) and c.size > 1]


DEFAULT_LOCAL_SHARE = 0.5
"""The engines' default share of local moves, where the program has something to move locally."""


def local_share_for(program: Program, local: float | None, residual: float) -> float:
    """The share of local moves on ``program``: ``local``, or where it is ``None`` (the engines'
    default) :data:`DEFAULT_LOCAL_SHARE` (at most what ``residual`` leaves) where ``program``
    has a component to move locally, else none."""
    if local is not None:
        return local
    return min(DEFAULT_LOCAL_SHARE, 1 - residual) if locally_movable(program) else 0.0


def check_move_shares(local: float | None, residual: float) -> tuple[float | None, float]:
    """The shares of local and residual moves, each in [0, 1] and together at most 1 (block
    moves get the rest); ``local=None`` is the default share (:func:`local_share_for`)."""
    if local is None:
        return None, checks.number_in("residual", residual, 0, 1, hint="the share of residual moves")
    local = checks.number_in("local", local, 0, 1, hint="the share of local moves")
    residual = checks.number_in("residual", residual, 0, 1, hint="the share of residual moves")
    if local + residual > 1:
        raise ValueError(f"local + residual is the share of moves that are not block moves, at most 1; got "
                         f"local={local} and residual={residual}")
    return local, residual


class MoveMixture:
    """Metropolis-Hastings moves of several kinds, one kind per program, chosen with fixed weights.

    :param program: whose programs are moved.
    :param blocks: the block moves' blocks, ``"step"``, ``"site"`` or ``"mixed"`` (:class:`BlockProposal`).
    :param proposal: the block moves' fresh values, ``"prior"`` or ``"uniform"``.
    :param local: the weight of :class:`LocalProposal` moves, in [0, 1].
    :param residual: the weight of :class:`ResidualProposal` moves, in [0, 1].
    :param radius: the local moves' largest step along each grid axis.

    Block moves get the rest of the weight, ``1 - local - residual``. Calling it on programs,
    their canvases and the targets returns a :class:`Proposal`.
    """

    def __init__(self, program: Program, *, blocks: str = "step", proposal: str = "prior", local: float = 0.0,
                 residual: float = 0.0, radius: int = 2) -> None:
        self.local_weight, self.residual_weight = check_move_shares(local, residual)
        self.block = BlockProposal(program, blocks=blocks, proposal=proposal)
        self.local = LocalProposal(program, radius=radius) if self.local_weight else None
        self.residual = ResidualProposal(program) if self.residual_weight else None

    @property
    def reads_canvas(self) -> bool:
        """Whether some moves read the current canvases (the residual ones)."""
        return self.residual is not None

    def __call__(self, actions: Mapping[str, torch.Tensor], canvas: torch.Tensor | None = None,
                 images: torch.Tensor | None = None) -> Proposal:
        proposed, log_q_ratio = self.block(actions)
        if self.local is None and self.residual is None:
            return Proposal(proposed, log_q_ratio)
        reference = next(iter(actions.values()))
        kind = torch.rand(reference.shape[:-1], device=reference.device)
        is_local = kind < self.local_weight
        is_residual = (kind >= self.local_weight) & (kind < self.local_weight + self.residual_weight)
        reverse = None
        if self.local is not None:
            local = self.local(actions)
            proposed = select_actions(is_local, local.actions, proposed)
            log_q_ratio = torch.where(is_local, local.log_q_known, log_q_ratio)
        if self.residual is not None:
            residual = self.residual(actions, canvas, images)
            proposed = select_actions(is_residual, residual.actions, proposed)
            log_q_ratio = torch.where(is_residual, residual.log_q_known, log_q_ratio)

            def reverse(proposed_canvas: torch.Tensor) -> torch.Tensor:
                # Of all the moves, only the residual ones' reverse density reads the proposed canvases.
                return torch.where(is_residual, residual.reverse(proposed_canvas), 0.0)
        return Proposal(proposed, log_q_ratio, reverse)
