r"""Blocked Metropolis-Hastings over a program's discrete sites, as a Pyro MCMC kernel.

The target of every chain is the posterior of a program given its target image :math:`x`,

.. math::

    \pi(a) \propto p(a)\, p(x \mid a) = \prod_{t,k} p(a_{t,k})\;
    \mathcal{N}\big(x;\ \mathrm{render}(a), \sigma^2 I\big).

Each transition redraws one block of sites (by default every component of one step, as in
the MCMC baseline of Ganin et al. 2018), or, in a chosen share of transitions, moves one
location or ordered value a little (local moves) or redraws a step where the canvas misses
the target (residual moves; see :mod:`spiral_ppl.inference.moves`), and accepts with the
Metropolis-Hastings probability.

Annealing (``anneal``) raises the likelihood to a power :math:`\beta_s` during the warm-up,
from ``anneal`` at the first transition geometrically up to 1 at its end, so that early
chains cross between modes more easily; after the warm-up :math:`\beta = 1` and the chains
sample the posterior. Each transition still costs one render per chain.

Parallel tempering (``exponents``) gives each chain its own power :math:`\beta_c` of the
likelihood, so chain :math:`c` samples :math:`\pi_c(a) \propto p(a)\, p(x \mid a)^{\beta_c}`.
After every transition, neighbouring chains (alternately the pairs from the first and the
second chain on) offer to swap their programs, accepted with probability
:math:`\min\big(1, \exp((\beta_c - \beta_{c+1})(\ell_{c+1} - \ell_c))\big)` for log
likelihoods :math:`\ell`, which leaves the product of the :math:`\pi_c` invariant (Geyer
1991). A swap renders nothing. The chains with :math:`\beta = 1` sample the posterior;
hotter ones (:math:`\beta < 1`) cross between modes, colder ones (:math:`\beta > 1`) settle
in the best programs near a mode, which is what a search for the least l2 wants. :class:`BlockedMetropolisHastings` advances
``chains`` chains for each of ``B`` targets at once: one transition is one batched render of
``chains * B`` programs, i.e. ``chains`` renders per target.

It is a :class:`pyro.infer.mcmc.MCMCKernel`, so it runs under :class:`pyro.infer.MCMC`
(progress bar, warm-up, several chains); its parameters are the sites
``step_{t}/{component}``, each ``(chains, B)``, plus the chain's ``log_joint`` and ``l2``.
Pyro stores the samples of a transition in one float tensor; the kernel's ``transforms``
map the sites back to their support, the integers, so ``MCMC.get_samples()`` returns them
as ``torch.long``. (Pyro's per-site ``summary()`` and ``diagnostics()`` compute means and
variances, which torch refuses for integers; the statistics that matter are the kernel's
own, below.) After ``pyro.infer.MCMC.run`` the kernel keeps its best reconstructions
(:attr:`~BlockedMetropolisHastings.best_l2`, ``best_images``, ``best_actions``) and the
traces of its last chain: Pyro's ``cleanup()`` lets go of the targets and the chains'
working state only. The :class:`MCMC` engine drives the same kernel under the shared
``engine.infer(prog, images, budget)`` contract.

Because steps can be permuted without changing the picture (label switching), per-site
:math:`\hat R` says nothing about convergence. The diagnostics that matter are computed on
permutation-invariant quantities: the log joint and the l2 error of each chain's state,
whose split :math:`\hat R` and effective sample size across the vectorised chains come
from :mod:`pyro.ops.stats` (:meth:`BlockedMetropolisHastings.diagnostics`), and which
``pyro.infer.MCMC.summary()`` reports next to the (uninformative) per-site rows.

Example::

    >>> import pyro, torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> target = prog.render({c.name: torch.ones(1, 2, dtype=torch.long) for c in prog.action_space})
    >>> kernel = sp.inference.BlockedMetropolisHastings(prog, chains=4)
    >>> mcmc = pyro.infer.MCMC(kernel, num_samples=20, warmup_steps=10, disable_progbar=True)
    >>> mcmc.run(target)
    >>> samples = mcmc.get_samples()
    >>> samples["step_0/flag"].shape, samples["step_0/flag"].dtype  # (samples, chains, targets)
    (torch.Size([20, 4, 1]), torch.int64)
    >>> sorted(kernel.diagnostics())  # permutation-invariant statistics, per target
    ['acceptance rate', 'l2_ess', 'l2_r_hat', 'log_joint_ess', 'log_joint_r_hat']
    >>> kernel.best_l2.shape  # kept after the run
    torch.Size([1])
    >>> result = sp.inference.MCMC(chains=4).infer(prog, target, sp.Budget(renders=100), seed=0)
    >>> result.renders.tolist()
    [100]

References: Metropolis et al., J. Chem. Phys. 1953; Hastings, Biometrika 1970; Gelman &
Rubin, Statistical Science 1992 (split :math:`\hat R` as in Vehtari et al. 2021); Ganin et al.,
"Synthesizing Programs for Images using Reinforced Adversarial Learning", ICML 2018.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.ops.stats import effective_sample_size as chain_effective_sample_size
from pyro.ops.stats import split_gelman_rubin
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.checks import choice, non_negative_int, positive_int
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, check_progress, hide_progress
from spiral_ppl.inference.moves import (
    BLOCKS,
    PROPOSALS,
    MoveMixture,
    check_move_shares,
    local_share_for,
    metropolis_accept,
    select_actions,
)
from spiral_ppl.inference.result import BestSoFar, Curve, Result
from spiral_ppl.programs.base import Program, require_fixed_structure, site_name
from spiral_ppl.squared_error import squared_error


def check_anneal(anneal: float | None) -> float | None:
    """``anneal`` as the kernel takes it: ``None``, or the first likelihood exponent in (0, 1]."""
    if anneal is None:
        return None
    return checks.number_in("anneal", anneal, 0, 1, open_low=True,
                            hint="the likelihood's exponent at the first transition, or None for no annealing")


def check_exponents(exponents: float | Sequence[float] | None, chains: int) -> tuple[float, ...] | None:
    """``exponents`` as the kernel takes them: ``None``; one positive likelihood exponent per
    chain; or one number, the last chain's, with a geometric ladder from 1 at the first.

    >>> check_exponents(16, 3)
    (1.0, 4.0, 16.0)
    """
    if exponents is None:
        return None
    if isinstance(exponents, (int, float)) and not isinstance(exponents, bool) and 0 < exponents < math.inf:
        if chains < 2:
            raise ValueError(f"parallel tempering needs at least 2 chains to swap, got chains={chains}; give more "
                             "chains, or exponents=None for none")
        return tuple(float(exponents) ** (chain / (chains - 1)) for chain in range(chains))

    def positive(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf

    if isinstance(exponents, str) or not isinstance(exponents, Sequence) or len(exponents) != chains \
            or not all(positive(value) for value in exponents):
        raise ValueError(f"exponents must be one positive likelihood exponent per chain ({chains} of them), e.g. "
                         f"(1, 2, 4, 8) for 4 chains, the last chain's (a ladder from 1), or None for no parallel "
                         f"tempering; got {exponents!r}")
    return tuple(float(value) for value in exponents)


def chain_diagnostics(trace: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split :math:`\\hat R` and effective sample size of a scalar trace ``(samples, chains, B)``.

    Returns ``{"r_hat": (B,), "ess": (B,)}``; NaN where there are too few samples (split
    :math:`\\hat R` needs 4, the ESS 2).
    """
    samples, batch = trace.shape[0], trace.shape[2:]
    trace = trace.double()
    nan = torch.full(batch, math.nan, dtype=torch.float64)
    r_hat = split_gelman_rubin(trace, chain_dim=1, sample_dim=0) if samples >= 4 else nan
    ess = chain_effective_sample_size(trace, chain_dim=1, sample_dim=0) if samples >= 2 else nan
    return {"r_hat": r_hat.float(), "ess": ess.float()}


class BlockedMetropolisHastings(MCMCKernel):
    """Blocked Metropolis-Hastings on the sites ``step_{t}/{component}`` of a program.

    :param program: the :class:`~spiral_ppl.programs.Program` whose posterior is sampled.
    :param chains: chains advanced together, vectorised, for every target.
    :param blocks: ``"step"`` (all components of one step, the paper's move), ``"site"``
        (single-site moves) or ``"mixed"``.
    :param proposal: fresh block values from the ``"prior"`` or ``"uniform"``.
    :param local: the share of transitions that are local moves, in [0, 1].
    :param residual: the share of transitions that are residual (data-driven) moves, in [0, 1].
    :param anneal: the likelihood's exponent at the first transition, in (0, 1], rising
        geometrically to 1 at the end of the warm-up; ``None``: no annealing.
    :param exponents: for parallel tempering, the likelihood's exponent :math:`\\beta_c > 0`
        of each chain (as many as ``chains``), or one number, the last chain's, for a geometric
        ladder from 1 at the first; neighbours swap programs. ``None``: every chain samples
        the posterior.

    :meth:`setup` takes the target images ``(B, C, H, W)`` (``mcmc.run(images)``). Chains
    start from the prior unless :attr:`initial_params` is set. Besides the samples, the
    kernel keeps the best reconstruction it has rendered for each target
    (:attr:`best_l2`, :attr:`best_images`, :attr:`best_actions`), rejected proposals
    included, since each is a rendered candidate.
    """

    def __init__(self, program: Program, *, chains: int = 1, blocks: str = "step", proposal: str = "prior",
                 local: float = 0.0, residual: float = 0.0, anneal: float | None = None,
                 exponents: float | Sequence[float] | None = None) -> None:
        if not isinstance(program, Program):
            raise TypeError(f"program must be a spiral_ppl.programs.Program, got {type(program).__name__}")
        require_fixed_structure(program, "BlockedMetropolisHastings (its blocks are steps)")
        self.program = program
        self.chains = positive_int("chains", chains)
        self.propose = MoveMixture(program, blocks=blocks, proposal=proposal, local=local, residual=residual)
        self.anneal = check_anneal(anneal)
        self.exponents = check_exponents(exponents, self.chains)
        # pyro.infer.MCMC stores every transition's values in one float tensor and applies
        # transforms[site].inv to give each site back in its support: the integers.
        self.transforms: dict = {name: _IntegerValues() for name in program.site_names()}
        self._reset()

    def _reset(self) -> None:
        self._initial_params: dict[str, torch.Tensor] | None = None
        self._images: torch.Tensor | None = None
        self._actions: dict[str, torch.Tensor] | None = None
        self._canvas: torch.Tensor | None = None
        self._log_prior: torch.Tensor | None = None
        self._log_likelihood: torch.Tensor | None = None
        self._log_joint: torch.Tensor | None = None
        self._l2: torch.Tensor | None = None
        self._t = 0
        self._warmup_steps = 0
        self._accepted: torch.Tensor | None = None
        self._proposed: torch.Tensor | None = None
        self._log_joint_trace: list[torch.Tensor] = []
        self._l2_trace: list[torch.Tensor] = []
        self._best: BestSoFar | None = None
        self._exponents: torch.Tensor | None = None
        self._swaps_offered, self._swaps_accepted = 0, 0

    # -- the MCMCKernel contract --------------------------------------------------------------

    @property
    def initial_params(self) -> dict[str, torch.Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._initial_params = params

    def setup(self, warmup_steps: int, images: torch.Tensor) -> None:
        """Start ``chains`` chains per target: from :attr:`initial_params` if set, else the prior.

        Costs one render per chain and target.
        """
        images = self.program.check_images(images, name="images")
        initial_params = self._initial_params
        self._reset()  # the previous run's results go; a start set for this one stays
        self._initial_params = initial_params
        self._warmup_steps = non_negative_int("warmup_steps", warmup_steps, hint="transitions left out of the traces")
        self._images = images
        targets = images.shape[0]
        if self.exponents is not None:
            self._exponents = torch.tensor(self.exponents, device=images.device).unsqueeze(1)
        if self._initial_params is None:
            # The model's prior over every site, drawn for all chains and targets in one call
            # (rather than by tracing the model's chains x targets x sites Categoricals).
            drawn = self.program.sample_prior(self.chains * targets, device=images.device)
            actions = {name: value.view(self.chains, targets, -1) for name, value in drawn.items()}
        else:
            actions = self._actions_from_params(self._initial_params, targets)
        canvas = self.program.render(actions)
        self._actions = actions
        self._canvas = canvas if self.propose.reads_canvas else None
        self._log_prior, self._log_likelihood, self._l2 = self._score(actions, canvas)
        self._log_joint = self._log_prior + self._log_likelihood
        self._accepted = torch.zeros(self.chains, targets, device=images.device)
        self._proposed = torch.zeros(self.chains, 1, device=images.device)
        self._best = BestSoFar(targets, images.device)
        self._best.update(self._l2, canvas, actions)
        self._initial_params = self._params()

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One blocked MH transition of every chain and target; returns the new sites.

        The kernel keeps the current state (and its log joint) itself, so ``params``, the
        sites it returned last, is not re-scored.
        """
        if self._actions is None:
            raise RuntimeError("call setup(warmup_steps, images) before sample()")
        self.step()
        return self._params()

    def logging(self) -> OrderedDict:
        rate = self._acceptance_rate()
        best = math.nan if self.best_l2 is None else float(self.best_l2.mean())
        return OrderedDict([("acc. rate", f"{float(rate.mean()):.3f}"), ("best l2", f"{best:.4g}")])

    def diagnostics(self) -> dict:
        """Acceptance rate and split :math:`\\hat R` / ESS of the log joint and the l2 error.

        Every value is per target, computed over the post-warm-up transitions of the
        vectorised chains.
        """
        log_joint, l2 = self.traces()
        log_joint_stats, l2_stats = chain_diagnostics(log_joint), chain_diagnostics(l2)
        return {
            "acceptance rate": self._acceptance_rate(),
            "log_joint_r_hat": log_joint_stats["r_hat"],
            "log_joint_ess": log_joint_stats["ess"],
            "l2_r_hat": l2_stats["r_hat"],
            "l2_ess": l2_stats["ess"],
        }

    def cleanup(self) -> None:
        """Let go of the targets and the chains' working state; the results stay readable
        (:attr:`best_l2`, :attr:`best_images`, :attr:`best_actions`, :meth:`traces`,
        :meth:`diagnostics`) until the next :meth:`setup`."""
        self._initial_params = None
        self._images = None
        self._actions = None
        self._canvas = None

    # -- the work -----------------------------------------------------------------------------

    def step(self, chains: int | None = None) -> None:
        """Advance the first ``chains`` chains (all by default) by one MH transition.

        Costs one render per advanced chain and target. Advancing fewer than all chains
        lets an engine spend a budget that is not a multiple of :attr:`chains`; such a
        partial transition is left out of the traces.
        """
        if self._actions is None:
            raise RuntimeError("call setup(warmup_steps, images) before step()")
        active = self.chains if chains is None else chains
        if not 1 <= active <= self.chains:
            raise ValueError(f"chains must lie in [1, {self.chains}], got {chains!r}")
        current = {name: value[:active] for name, value in self._actions.items()}
        move = self.propose(current, None if self._canvas is None else self._canvas[:active], self._images)
        proposed = move.actions
        canvas = self.program.render(proposed)
        log_prior, log_likelihood, l2 = self._score(proposed, canvas)
        beta = self.likelihood_exponent()
        if self._exponents is not None:
            beta = beta * self._exponents[:active]
        log_ratio = (log_prior - self._log_prior[:active] + beta * (log_likelihood - self._log_likelihood[:active])
                     + move.log_q_ratio(canvas))
        accept = metropolis_accept(log_ratio)

        for name, value in select_actions(accept, proposed, current).items():
            self._actions[name][:active] = value
        if self._canvas is not None:
            self._canvas[:active] = torch.where(accept.view(*accept.shape, 1, 1, 1), canvas, self._canvas[:active])
        self._log_prior[:active] = torch.where(accept, log_prior, self._log_prior[:active])
        self._log_likelihood[:active] = torch.where(accept, log_likelihood, self._log_likelihood[:active])
        self._log_joint[:active] = self._log_prior[:active] + self._log_likelihood[:active]
        self._l2[:active] = torch.where(accept, l2, self._l2[:active])
        self._best.update(l2, canvas, proposed)
        if self._exponents is not None and active == self.chains:
            self._swap_neighbours()

        self._t += 1
        if self._t > self._warmup_steps:
            self._accepted[:active] += accept
            self._proposed[:active] += 1
            if active == self.chains:
                self._log_joint_trace.append(self._log_joint.clone())
                self._l2_trace.append(self._l2.clone())

    def _swap_neighbours(self) -> None:
        """Offer every other pair of neighbouring chains a swap of their programs, per target
        (the parallel-tempering move of the module docstring)."""
        chains, targets = self._log_likelihood.shape
        first = torch.arange(self._t % 2, chains - 1, 2, device=self._log_likelihood.device)
        if first.numel() == 0:
            return
        second = first + 1
        beta = self._exponents * self.likelihood_exponent()  # (chains, 1)
        log_alpha = (beta[first] - beta[second]) * (self._log_likelihood[second] - self._log_likelihood[first])
        swap = metropolis_accept(log_alpha)  # (pairs, targets)
        order = torch.arange(chains, device=swap.device).unsqueeze(1).repeat(1, targets)
        order[first] = torch.where(swap, second.unsqueeze(1), first.unsqueeze(1))
        order[second] = torch.where(swap, first.unsqueeze(1), second.unsqueeze(1))

        def reordered(values: torch.Tensor) -> torch.Tensor:
            index = order.view(chains, targets, *([1] * (values.dim() - 2))).expand_as(values)
            return values.gather(0, index)

        self._actions = {name: reordered(value) for name, value in self._actions.items()}
        if self._canvas is not None:
            self._canvas = reordered(self._canvas)
        self._log_prior, self._log_likelihood = reordered(self._log_prior), reordered(self._log_likelihood)
        self._log_joint, self._l2 = reordered(self._log_joint), reordered(self._l2)
        self._swaps_offered += swap.numel()
        self._swaps_accepted += swap.sum()

    def likelihood_exponent(self) -> float:
        """The power :math:`\beta` of the likelihood in the next transition (1 unless annealing)."""
        if self.anneal is None or self._t >= self._warmup_steps:
            return 1.0
        return self.anneal ** (1 - self._t / self._warmup_steps)

    def traces(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-warm-up traces ``(samples, chains, B)`` of the log joint and the l2 error."""
        if self._log_joint is None:
            raise RuntimeError("call setup(warmup_steps, images) before traces()")
        if not self._log_joint_trace:
            empty = self._log_joint.new_zeros(0, *self._log_joint.shape)
            return empty, empty.clone()
        return torch.stack(self._log_joint_trace), torch.stack(self._l2_trace)

    @property
    def current_actions(self) -> dict[str, torch.Tensor]:
        """The chains' current programs ``{name: LongTensor[chains, B, T]}``."""
        assert self._actions is not None
        return self._actions

    def _score(self, actions: dict[str, torch.Tensor],
               canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log prior ``log p(a)``, log likelihood ``log p(x | render(a))`` and mean squared pixel
        error, ``(chains, B)`` each.

        One pass over the pixels serves the last two (the default likelihood is a function of
        the squared error).
        """
        error = squared_error(canvas, self._images)
        log_likelihood = self.program.log_likelihood(canvas, self._images, error)
        # The chains' programs were drawn or checked by this kernel: no need to check them again.
        return self.program.log_prior(actions, check=False), log_likelihood, error / math.prod(canvas.shape[-3:])

    @property
    def best_l2(self) -> torch.Tensor | None:
        """``(B,)`` the least l2 rendered so far for each target (``None`` before :meth:`setup`)."""
        return None if self._best is None else self._best.l2

    @property
    def best_images(self) -> torch.Tensor | None:
        """``(B, C, H, W)`` the canvases of :attr:`best_l2`."""
        return None if self._best is None else self._best.images

    @property
    def best_actions(self) -> dict[str, torch.Tensor] | None:
        """The programs ``{name: (B, T)}`` of :attr:`best_l2`."""
        return None if self._best is None else self._best.actions

    def _acceptance_rate(self) -> torch.Tensor:
        """Per target: accepted over proposed transitions, after warm-up (during it, so far)."""
        if self._accepted is None:
            return torch.zeros(0)
        proposed = self._proposed.sum()
        if proposed == 0:
            return torch.full((self._accepted.shape[1],), math.nan)
        return self._accepted.sum(0) / proposed

    def _params(self) -> dict[str, torch.Tensor]:
        assert self._actions is not None
        params = {
            site_name(t, name): self._actions[name][..., t]
            for t in range(self.program.steps)
            for name in self._actions
        }
        # Recorded with the sites so that pyro.infer.MCMC keeps the permutation-invariant
        # quantities of every transition beside the sites' values.
        params["log_joint"] = self._log_joint.clone()
        params["l2"] = self._l2.clone()
        return params

    def _actions_from_params(self, params: dict[str, torch.Tensor], targets: int) -> dict[str, torch.Tensor]:
        missing = [name for name in self.program.site_names() if name not in params]
        if missing:
            raise ValueError(f"initial_params lacks the sites {missing[:4]}; it needs every step_{{t}}/{{component}}")
        values = [torch.as_tensor(params[name]) for name in self.program.site_names()]
        fractional = [name for name, value in zip(self.program.site_names(), values)
                      if value.is_floating_point() and not bool((value == value.round()).all())]
        if fractional:
            raise ValueError(f"initial_params must hold whole action values; {fractional[:4]} have fractions")
        values = [value.long() for value in values]
        try:
            values = [value.expand(self.chains, targets) for value in values]
        except RuntimeError:
            raise ValueError(
                f"initial_params values must broadcast to (chains, targets) = ({self.chains}, {targets}), "
                f"got shapes {sorted({tuple(v.shape) for v in values})}"
            ) from None
        return {name: value.contiguous() for name, value in self.program.stack_sites(values).items()}


class _IntegerValues(torch.distributions.transforms.Transform):
    """The values of a discrete site stored as floats by pyro.infer.MCMC, given back as integers."""

    bijective = True

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.round().long()


class MCMC(Engine):
    """Blocked Metropolis-Hastings behind the shared engine interface.

    The budget of ``N`` renders per target is split over ``chains`` vectorised chains:
    starting them costs ``chains`` renders, every transition ``chains`` more, and the
    remainder of ``N`` by ``chains`` goes to one last transition of that many chains, so
    exactly ``N`` renders are spent. The best reconstruction is the lowest-l2 program
    rendered, rejected proposals included.

    :param chains: chains per target (at most ``N``).
    :param blocks: ``"step"``, ``"site"`` or ``"mixed"`` (see :mod:`~spiral_ppl.inference.moves`).
    :param proposal: ``"prior"`` or ``"uniform"``.
    :param local: the share of local moves (:class:`~spiral_ppl.inference.moves.LocalProposal`);
        ``None`` (the default): half, where the program has a location or ordered component.
    :param residual: the share of residual moves (:class:`~spiral_ppl.inference.moves.ResidualProposal`).
    :param anneal: the likelihood's exponent at the first transition, rising to 1 by the end of
        the warm-up; ``None``: no annealing.
    :param exponents: parallel tempering: each chain's likelihood exponent, neighbours swapping
        programs (:class:`BlockedMetropolisHastings`); ``None``: none.
    :param warmup: fraction of the transitions that are warm-up: annealed, and left out of
        the diagnostics.
    :param progress: show a progress bar (``None``: only on a terminal).

    The defaults are the mixture that did best on validation targets
    (``benchmarks/search_defaults.py``): half the moves local, half whole steps from the
    prior, and parallel tempering over a ladder of likelihood exponents from 1 up to 15
    (cold chains that settle on the least-l2 programs while the first still samples the
    posterior). :meth:`paper_baseline` is the paper's blocked MH.

    Example::

        >>> import torch, spiral_ppl as sp
        >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
        >>> target = prog.render({c.name: torch.ones(1, 2, dtype=torch.long) for c in prog.action_space})
        >>> engine = sp.inference.MCMC(progress=False)
        >>> engine.exponents
        (1.0, 2.46..., 6.08..., 15.0)
        >>> result = engine.infer(prog, target, sp.Budget(renders=400), seed=0)
        >>> result.renders.tolist()
        [400]

    ``Result.diagnostics`` holds ``acceptance_rate``, ``log_joint_r_hat``, ``log_joint_ess``,
    ``l2_r_hat``, ``l2_ess`` (each ``(B,)``), the traces ``log_joint`` and ``l2``
    ``(samples, chains, B)``, and ``chain_actions``, the chains' final programs.
    """

    name = "mcmc"

    def __init__(
        self,
        *,
        chains: int = 4,
        blocks: str = "step",
        proposal: str = "prior",
        local: float | None = None,
        residual: float = 0.0,
        anneal: float | None = None,
        exponents: float | Sequence[float] | None = 15.0,
        warmup: float = 0.5,
        progress: bool | None = None,
    ) -> None:
        positive_int("chains", chains)
        if not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
        self.chains = chains
        self.blocks = blocks
        self.proposal = proposal
        self.local, self.residual = check_move_shares(local, residual)
        self.anneal = check_anneal(anneal)
        self.exponents = check_exponents(exponents, chains)
        self.warmup = float(warmup)
        self.progress = check_progress(progress)
        # Fail at construction rather than mid-run on a bad block or proposal name.
        choice("blocks", blocks, BLOCKS)
        choice("proposal", proposal, PROPOSALS)

    @classmethod
    def paper_baseline(cls, chains: int = 4, progress: bool | None = None) -> "MCMC":
        """The paper's blocked MH (Ganin et al. 2018): each move redraws one whole step from
        the prior; no local or residual moves, no tempering."""
        return cls(chains=chains, blocks="step", proposal="prior", local=0.0, residual=0.0, anneal=None,
                   exponents=None, progress=progress)

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        if budget.renders < self.chains:
            raise ValueError(
                f"MCMC with {self.chains} chains needs a budget of at least {self.chains} renders per target "
                f"(one to start each chain), got {budget.renders}; lower chains or raise the budget"
            )
        transitions, last_chains = divmod(budget.renders - self.chains, self.chains)
        # Each transition keeps the best l2 so far and the chains' log joint and l2, stacked at the end.
        targets = images.shape[0]
        checks.fits_in_memory(f"MCMC with {transitions:,} transitions of {self.chains} chains for {targets} targets",
                              transitions * (8 * targets * (1 + 2 * self.chains) + 640),
                              remedy="give a smaller budget", where=images.device)
        kernel = BlockedMetropolisHastings(prog, chains=self.chains, blocks=self.blocks, proposal=self.proposal,
                                           local=local_share_for(prog, self.local, self.residual),
                                           residual=self.residual, anneal=self.anneal, exponents=self.exponents)
        kernel.setup(int(self.warmup * transitions), images)
        renders, best_l2 = [self.chains], [kernel.best_l2.clone()]
        with tqdm(total=transitions, desc=self.name, unit="step", disable=hide_progress(self.progress)) as bar:
            for _ in range(transitions):
                kernel.step()
                renders.append(renders[-1] + self.chains)
                best_l2.append(kernel.best_l2.clone())
                bar.update()
                if bar.n % 50 == 0:
                    bar.set_postfix(kernel.logging())
        if last_chains:
            kernel.step(chains=last_chains)
            renders.append(renders[-1] + last_chains)
            best_l2.append(kernel.best_l2.clone())

        log_joint, l2 = kernel.traces()
        diagnostics = {name.replace(" ", "_"): value for name, value in kernel.diagnostics().items()}
        diagnostics.update(log_joint=log_joint, l2=l2, chain_actions=kernel.current_actions)
        return Result(
            images=kernel.best_images,
            actions=kernel.best_actions,
            l2=kernel.best_l2,
            renders=torch.zeros(images.shape[0], dtype=torch.long),
            seconds=0.0,
            curve=Curve(torch.tensor(renders), torch.stack(best_l2).cpu()),
            diagnostics=diagnostics,
        )
