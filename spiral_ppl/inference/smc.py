r"""Sequential Monte Carlo over the steps of a program.

Particles are programs grown one step at a time through the program's step-wise protocol
(``prog.stepwise``, :mod:`spiral_ppl.programs.stepwise`), so any program works. The intermediate targets
score the partial canvas :math:`c_t` of the first :math:`t` steps,

.. math::

    \gamma_t(a_{1:t}) = r_t(a_{1:t})\, p(x \mid c_t)^{\beta_t}, \qquad t = 1 \dots T,

where :math:`r_t` is the prior of the prefix, :math:`p(a_{1:t})` (``intermediate="model"``,
the default), or the proposal's own density of it, :math:`q(a_{1:t} \mid x)`
(``intermediate="proposal"``), and :math:`\beta_t` tempers the likelihood of the partial
canvas (``tempering``; 1 by default). The last target is always the posterior's,
:math:`\gamma_T(a) = p(a)\, p(x \mid a)`. A particle that draws
:math:`a_t \sim q(\cdot \mid a_{<t}, x)` has the incremental weight

.. math::

    \log w_t = \log \gamma_t(a_{1:t}) - \log \gamma_{t-1}(a_{1:t-1}) - \log q(a_t \mid a_{<t}, x)

(with :math:`\gamma_0 = 1`), so the weights telescope to the importance weight of the whole
program, :math:`p(a)\, p(x \mid a) / q(a \mid x)`, whatever the intermediate targets; they
only decide which prefixes resampling keeps. With the defaults, :math:`\log w_t = \log p(a_t)
- \log q(a_t \mid a_{<t}, x) + \log p(x \mid c_t) - \log p(x \mid c_{t-1})`.

Why the choice matters: with a sharp learned proposal (a SPIRAL policy), the default targets
resample by two things the policy has already looked past. The factor :math:`p(a_t) / q(a_t)`
favours the particles whose actions the policy found unlikely, and the partial canvas's
likelihood favours prefixes that cover the target soonest, where the policy may plan a jump
first and strokes after. ``intermediate="proposal"`` defers the prior/proposal ratio to the
last step, and a small :math:`\beta_t` early on keeps the likelihood from selecting myopically;
together they make resampling trust the policy early and the image late (measured on MNIST
in benchmarks/RESULTS.md). On programs whose partial canvases are already telling
(objects placed one at a time) the defaults do better. Like a twisted SMC (Whiteley and Lee
2014) the intermediate targets are a design choice that changes the variance, never the
target: the last step's weights and :math:`\hat Z` stay exact.

When the effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2` of a target falls under
``ess_threshold * N``, its particles are resampled (systematic resampling) and given the
mean weight, so that

.. math::

    \log \hat Z = \operatorname{logsumexp}_i \log w_i - \log N

at the last step is an unbiased estimate of :math:`Z = p(x)` (Del Moral 2004).
Optionally, every step ends with Metropolis-Hastings rejuvenation moves on the particles'
prefixes, which leave :math:`\gamma_t` invariant and so do not change the weights
(resample-move; Gilks & Berzuini 2001). They need ``intermediate="model"``: the density of
the proposal on a moved prefix would take replaying the proposal.

Cooling. The posterior's pixel noise tolerates programs a little off the target, so its
particles are seldom the least-l2 reconstructions. With ``cooling`` :math:`= \beta_K > 1`, the
finished particles then pass through :math:`K` stages whose targets sharpen the likelihood,

.. math::

    \pi_k(a) \propto p(a)\, p(x \mid a)^{\beta_k}, \qquad \beta_k = \beta_K^{k / K},

an annealed SMC sampler beyond the posterior (Neal 2001; Del Moral, Doucet & Jasra 2006).
Each stage reweights by :math:`p(x \mid a)^{\beta_k - \beta_{k-1}}`, resamples (at the first
stage always, down to a few particles; later when the ESS falls under the threshold) and runs
Metropolis-Hastings moves that leave :math:`\pi_k` invariant, long chains on few particles
(:func:`~spiral_ppl.inference.smc_schedules.cooling_schedule`). Every moved program is a
candidate reconstruction; the result is the least l2 seen. The cooled particles weigh a
sharper distribution than the posterior, so ``log_weights``, ``ess`` and ``log_evidence`` stay
those of the last step.

Budget: each canvas of a particle costs one render, and so does each rejuvenation move (the
prefix is replayed and its canvas read once). With ``k`` moves per step, a particle costs
``T (1 + k)`` renders, so a budget of ``N`` renders per target runs
``N // (T (1 + k))`` particles; the remainder buys one more particle for the first steps
(the population shrinks back by resampling, see :func:`particle_schedule`), so the budget
is spent exactly when ``k = 0``, and to within ``2 k`` renders otherwise. A proposal that
draws ``r`` canvases of its own per particle and step (a Pyro guide that renders, re-run on
each prefix) makes that ``T (1 + r + k)``. Cooling spends ``cooling_share`` of the budget
(less where the steps would be left without one particle), one render per particle and
move; the steps spend the rest.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3)
    >>> target = prog.render({c.name: torch.ones(1, 3, dtype=torch.long) for c in prog.action_space})
    >>> result = sp.inference.SMC.paper_baseline().infer(prog, target, sp.Budget(renders=301), seed=0)
    >>> result.renders.tolist(), result.diagnostics["particles"]
    ([301], [101, 100, 100])
    >>> result = sp.inference.SMC().infer(prog, target, sp.Budget(renders=301), seed=0)
    >>> cooling = result.diagnostics["cooling"]
    >>> result.renders.tolist(), result.diagnostics["particles"], cooling.particles, cooling.moves
    ([301], [6, 6, 5], 1, 67)

References: Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS B 2006;
Doucet & Johansen, "A tutorial on particle filtering and smoothing: fifteen years later",
2009; Whiteley & Lee, "Twisted particle filters", Annals of Statistics 2014; Gilks &
Berzuini, "Following a moving target: Monte Carlo inference for dynamic Bayesian models",
JRSS B 2001; Neal, "Annealed importance sampling", Statistics and Computing 2001.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.checks import choice, non_negative_int
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, check_progress, hide_progress
from spiral_ppl.inference.importance import effective_sample_size
from spiral_ppl.inference.moves import (
    BLOCKS,
    PROPOSALS,
    MoveMixture,
    check_move_shares,
    local_share_for,
    metropolis_accept,
    select_actions,
)
from spiral_ppl.inference.proposals import PriorProposal, ResidualStepProposal, as_step_proposal
from spiral_ppl.inference.result import BestSoFar, Curve, Result
from spiral_ppl.inference.smc_schedules import (
    NO_COOLING,
    CoolingSchedule,
    check_tempering,
    cooling_schedule,
    particle_schedule,
    systematic_resample,
    tempering_schedule,
)
from spiral_ppl.programs.base import Program, mean_squared_error
from spiral_ppl.renderers.base import validate_actions
from spiral_ppl.squared_error import squared_error

INTERMEDIATE_TARGETS = ("model", "proposal")


class SMC(Engine):
    """Sequential Monte Carlo over program steps, with optional resample-move rejuvenation.

    :param proposal: ``"residual"`` (the default:
        :class:`~spiral_ppl.inference.proposals.ResidualStepProposal`, each step drawn where
        the particle's canvas misses the target), ``"prior"`` or ``None`` for the prior, a
        :class:`~spiral_ppl.inference.proposals.StepProposal`, or a Pyro guide
        ``guide(image)`` over the program's sites (its own step proposal where it has one,
        as ``agent.guide`` does; see :func:`~spiral_ppl.inference.proposals.as_step_proposal`).
    :param ess_threshold: resample a target's particles when their effective sample size
        falls under ``ess_threshold * N``; 0 never resamples (sequential importance
        sampling), 1 always does.
    :param intermediate: the factor :math:`r_t` of the intermediate targets (module
        docstring): ``"model"``, the prior of the prefix, or ``"proposal"``, its density
        under the proposal.
    :param tempering: the exponents :math:`\\beta_t` of the partial canvases' likelihoods:
        ``None`` (all 1), the first one, in (0, 1] (geometric up to 1, see
        :func:`tempering_schedule`), or one per step, in [0, 1], ending with 1.
    :param rejuvenation_moves: Metropolis-Hastings moves per particle after each step;
        ``None`` (the default): one where the budget pays for a particle that moves, else none
        (:meth:`moves_for`).
    :param blocks: block of the rejuvenation moves: ``"step"``, ``"site"`` or ``"mixed"``.
    :param move_proposal: fresh values of a moved block from the ``"prior"`` or ``"uniform"``.
    :param local: the share of rejuvenation and cooling moves that are local moves
        (:class:`~spiral_ppl.inference.moves.LocalProposal`); ``None`` (the default): half,
        where the program has a location or ordered component.
    :param residual: the share that are residual (data-driven) moves
        (:class:`~spiral_ppl.inference.moves.ResidualProposal`).
    :param cooling: ``None``, or the likelihood exponent above 1 to which the finished
        particles are cooled after the last step, for the least l2 (see "Cooling" in the module
        docstring).
    :param cooling_share: the share of the budget the cooling stages spend, in (0, 1).
    :param cooling_stages: the number of cooling stages, exponents geometric up to ``cooling``.
    :param progress: show a progress bar (``None``: only on a terminal).

    The defaults are the mixture that did best on validation targets
    (``benchmarks/search_defaults.py``): residual proposals, one rejuvenation move per step
    (half of them local), and cooling to a likelihood exponent of 40 with 90% of the budget.
    :meth:`paper_baseline` is the paper's SMC, prior particles alone. Cooling leaves the
    posterior's particles a tenth of the budget: for the log evidence or posterior samples
    rather than the least l2, give ``cooling=None``.

    ``Result.log_weights`` are the final particles' ``(N, B)``, ``Result.log_evidence``
    :math:`\\log \\hat Z` per target. ``Result.diagnostics`` holds ``ess`` ``(T, B)`` after
    each step's weighting, ``resampled`` ``(T, B)`` whether the particles were resampled
    after that step, ``ancestry``, a list over steps of ``(N_t, B)`` parent indices into the
    previous step's particles, ``particles``, the schedule ``N_t``, ``tempering``, the
    exponents :math:`\\beta_t`, and, with rejuvenation, ``acceptance_rate`` ``(B,)``. With
    cooling, ``log_weights``, ``ess`` and ``log_evidence`` are still those of the posterior's
    particles after the last step (the cooled ones weigh a sharper distribution), and
    ``diagnostics["cooling"]`` holds the :class:`~spiral_ppl.inference.smc_schedules.CoolingSchedule`,
    ``diagnostics["cooling_acceptance_rate"]`` ``(B,)`` and ``diagnostics["cooled_actions"]``
    the cooled particles' programs ``{component: (N, B, T)}``.
    """

    name = "smc"

    def __init__(
        self,
        proposal: Any = "residual",
        *,
        ess_threshold: float = 0.5,
        intermediate: str = "model",
        tempering: float | Sequence[float] | None = None,
        rejuvenation_moves: int | None = None,
        blocks: str = "step",
        move_proposal: str = "prior",
        local: float | None = None,
        residual: float = 0.0,
        cooling: float | None = 40.0,
        cooling_share: float = 0.9,
        cooling_stages: int = 4,
        progress: bool | None = None,
    ) -> None:
        self.proposal = as_step_proposal(proposal)
        number = isinstance(ess_threshold, (int, float)) and not isinstance(ess_threshold, bool)
        if not number or not 0 <= ess_threshold <= 1:
            raise ValueError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
        if rejuvenation_moves is not None:
            non_negative_int("rejuvenation_moves", rejuvenation_moves)
        self.ess_threshold = float(ess_threshold)
        self.intermediate = choice("intermediate", intermediate, INTERMEDIATE_TARGETS)
        self.tempering = check_tempering(tempering)
        if rejuvenation_moves and self.intermediate == "proposal":
            raise ValueError(
                "rejuvenation moves need intermediate='model': they leave the intermediate targets invariant, and "
                "the proposal's density of a moved prefix would take replaying the proposal"
            )
        self.rejuvenation_moves = rejuvenation_moves
        self.blocks = choice("blocks", blocks, BLOCKS)
        self.move_proposal = choice("move_proposal", move_proposal, PROPOSALS)
        self.local, self.residual = check_move_shares(local, residual)
        if cooling is not None:
            cooling = checks.number_in("cooling", cooling, 1, math.inf, open_low=True, open_high=True,
                                       hint="the likelihood exponent the particles are cooled to, or None")
        self.cooling = cooling
        self.cooling_share = checks.number_in("cooling_share", cooling_share, 0, 1, open_low=True, open_high=True,
                                              hint="the share of the budget the cooling stages spend")
        self.cooling_stages = checks.positive_int("cooling_stages", cooling_stages)
        self.progress = check_progress(progress)
        if not isinstance(self.proposal, (PriorProposal, ResidualStepProposal)):
            self.name = "smc-guide"

    @classmethod
    def paper_baseline(cls, progress: bool | None = None) -> "SMC":
        """The paper's SMC: particles from the prior, resampled by their weights; no
        rejuvenation moves, no cooling."""
        return cls("prior", rejuvenation_moves=0, cooling=None, progress=progress)

    def fewest_renders(self, prog: Program) -> int:
        """The smallest budget (renders per target) this engine can spend on ``prog``: one
        particle through every step."""
        return self._one_particle(prog, self.rejuvenation_moves or 0)

    def moves_for(self, prog: Program, budget: Budget) -> int:
        """Rejuvenation moves per particle and step on ``prog`` within ``budget``:
        ``rejuvenation_moves``, or where that is ``None``, one where the budget pays for one
        particle that moves (and ``intermediate="model"``), else none."""
        if self.rejuvenation_moves is not None:
            return self.rejuvenation_moves
        return int(budget.renders >= self._one_particle(prog, 1) and self.intermediate == "model")

    def particles_for(self, prog: Program, budget: Budget) -> list[int]:
        """The number of particles at each step that ``budget`` pays for on ``prog`` (less
        the renders of the cooling stages, :meth:`cooling_for`)."""
        moves = self.moves_for(prog, budget)
        needed = self._one_particle(prog, moves)
        if budget.renders < needed:
            drawn = self.proposal.renders_per_proposal
            with_moves = f" with {moves} rejuvenation moves per step" if moves else ""
            with_drawn = (f" and a proposal that draws {drawn} canvases of its own per particle and step"
                          if drawn else "")
            raise ValueError(
                f"SMC on a program of {prog.steps} steps{with_moves}{with_drawn} needs a budget of at least "
                f"{needed} renders per target (one particle), got {budget.renders}"
            )
        renders = budget.renders - self.cooling_for(prog, budget).renders
        return particle_schedule(renders, prog.steps, moves, 1 + self.proposal.renders_per_proposal)

    def cooling_for(self, prog: Program, budget: Budget) -> CoolingSchedule:
        """The cooling stages that ``budget`` pays for on ``prog``: ``cooling_share`` of it, or
        less where that would leave the steps less than one particle."""
        if self.cooling is None:
            return NO_COOLING
        left = budget.renders - self._one_particle(prog, self.moves_for(prog, budget))
        return cooling_schedule(max(min(int(self.cooling_share * budget.renders), left), 0), self.cooling,
                                self.cooling_stages)

    def _one_particle(self, prog: Program, moves: int) -> int:
        """Renders per target of one particle through every step with ``moves`` moves a step."""
        return prog.steps * (1 + self.proposal.renders_per_proposal + moves)

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        schedule = self.particles_for(prog, budget)
        moves = self.moves_for(prog, budget)
        cooling = self.cooling_for(prog, budget)
        check_memory(max(schedule) * images.shape[0], prog, images.device)
        run = _ParticleRun(self, prog, images, schedule[0], tempering_schedule(self.tempering, prog.steps))
        last = prog.steps - 1
        for t in tqdm(range(prog.steps), desc=self.name, unit="step", disable=hide_progress(self.progress)):
            run.extend(t)
            if t < last:
                forced = schedule[t + 1] != run.particles
                run.resample(schedule[t + 1], forced | (run.ess[-1] < self.ess_threshold * run.particles))
            else:
                run.record_candidates()
            for _ in range(moves):
                run.rejuvenate(t, score_candidates=t == last)
        result = run.result()
        result.diagnostics["particles"] = schedule
        result.diagnostics["tempering"] = run.tempering
        if cooling.exponents:
            acceptance_rate = run.cool(cooling, self.ess_threshold)
            result.images, result.actions, result.l2 = run.best.images, run.best.actions, run.best.l2
            result.curve = run.curve()
            result.diagnostics["cooling"] = cooling
            result.diagnostics["cooling_acceptance_rate"] = acceptance_rate
            result.diagnostics["cooled_actions"] = dict(run.history)
        return result


def check_memory(canvases: int, prog: Program, where: torch.device | str | None = None) -> None:
    """Refuse a run whose particles' canvases alone would not fit in this machine's memory.

    All particles of all targets step together, each with its canvas (and the canvases being
    compared, resampled and proposed beside it: about four copies), so that is the least a
    run holds; a budget far beyond it would otherwise fail deep inside the allocator.
    """
    needed = 4 * canvases * prog.channels * prog.image_size ** 2 * 4  # float32 bytes
    checks.fits_in_memory(f"this SMC run would hold {canvases:,} particles' canvases at once (particles per target "
                          "times targets), which", needed, where=where,
                          remedy="give a smaller budget, or infer fewer targets at a time")


class _ParticleRun:
    """The particles of one SMC run and their bookkeeping (internal to :class:`SMC`).

    Particles of all targets live in one batch of ``N * B`` program states, particle-major:
    item ``n * B + b`` is particle ``n`` of target ``b``.

    Resampling copies nothing large: the program states are advanced from their ancestors'
    rows by the next step (:meth:`~spiral_ppl.programs.Stepwise.advance_and_compare`), and the
    canvases are gathered only when something reads them (:attr:`canvas`); the next step
    replaces every canvas, so with a proposal that does not look at them
    (``reads_canvas = False``) and no rejuvenation they are never copied.
    """

    def __init__(self, engine: SMC, prog: Program, images: torch.Tensor, particles: int,
                 tempering: list[float]) -> None:
        self.engine, self.prog, self.images, self.tempering = engine, prog, images, tempering
        self.targets, self.device = images.shape[0], images.device
        self.particles = particles
        self.stepwise = prog.stepwise
        self.state = self.stepwise.initial(particles * self.targets, device=self.device)
        #: Rows of :attr:`state` that the particles descend from since the last resampling,
        #: applied by the next step (``None``: the states are the particles' own).
        self.state_rows: torch.Tensor | None = None
        self.history = {
            c.name: torch.zeros(particles, self.targets, 0, dtype=torch.long, device=self.device)
            for c in prog.action_space
        }
        # Every particle and target starts from the program's blank canvas, which is no render.
        blank = prog.blank_canvas(1, device=self.device)
        self.canvas = blank.expand(particles, self.targets, *blank.shape[1:])
        # Per particle: its weight, and the parts of its intermediate target's density
        # (module docstring): log p(x | c_t), log p(a_{1:t}), log q(a_{1:t} | x), log gamma_t.
        self.log_weights = torch.zeros(particles, self.targets, device=self.device)
        self.log_likelihood = torch.zeros_like(self.log_weights)
        self.log_prior = torch.zeros_like(self.log_weights)
        self.log_proposal = torch.zeros_like(self.log_weights)
        self.log_target = torch.zeros_like(self.log_weights)
        self.ess: list[torch.Tensor] = []
        self.resampled: list[torch.Tensor] = []
        self.ancestry = [torch.arange(particles, device=self.device)[:, None].expand(particles, self.targets)]
        self.spent = 0
        self.curve_renders: list[int] = []
        self.curve_l2: list[torch.Tensor] = []
        self.best = BestSoFar(self.targets, self.device)
        self.mover = MoveMixture(prog, blocks=engine.blocks, proposal=engine.move_proposal,
                                 local=local_share_for(prog, engine.local, engine.residual),
                                 residual=engine.residual)
        self.accepted = torch.zeros(self.targets, device=self.device)
        self.moves = 0

    # -- one step ---------------------------------------------------------------------------

    @property
    def canvas(self) -> torch.Tensor:
        """The particles' canvases ``(N, B, C, H, W)``, gathered from their ancestors' on first read."""
        if self._canvas_ancestors is not None:
            self._canvas = self._gather(self._canvas, self._canvas_ancestors)
            self._canvas_ancestors = None
        return self._canvas

    @canvas.setter
    def canvas(self, canvas: torch.Tensor | None) -> None:
        self._canvas = canvas
        self._canvas_ancestors: torch.Tensor | None = None

    def extend(self, step: int) -> None:
        """Draw and render every particle's action ``step`` and update the weights."""
        if self.state is None:  # rejuvenation changed the prefixes since the state was last derived
            self.state = self._replay(self.history)
        proposal = self.engine.proposal
        canvas = self.canvas if proposal.reads_canvas else None
        action, log_q = proposal.propose(self.prog, step, self.history, canvas, self.images)
        # This step replaces every canvas: letting the old ones go before painting lets the
        # allocator reuse their memory for the new ones.
        del canvas
        self.canvas = None
        action, log_q = self._check_proposal(action, log_q)
        # The prior of the step given the prefix; a proposal from the prior has just computed it as log q.
        log_prior = log_q if proposal.is_prior else self.prog.step_prior(step, self.history, action)[1]
        flat_action = {name: value.reshape(-1) for name, value in action.items()}
        self.state, error = self.stepwise.advance_and_compare(self.state, flat_action, self.images, self.state_rows)
        self.state_rows = None
        self.canvas = self._view(self.stepwise.canvas(self.state))
        self.spent += self.particles * (1 + proposal.renders_per_proposal)
        # The squared errors, where they came with the canvases, spare reading them again.
        error = None if error is None else self._view(error)
        self.log_likelihood = self.prog.log_likelihood(self.canvas, self.images, error)
        self.log_prior = self.log_prior + log_prior
        self.log_proposal = self.log_proposal + log_q
        log_target = self._log_target(step)
        self.log_weights = self.log_weights + log_target - self.log_target - log_q
        self.log_target = log_target
        self.history = {name: torch.cat([past, action[name][..., None]], -1) for name, past in self.history.items()}
        self.ess.append(effective_sample_size(self.log_weights))

    def resample(self, count: int, mask: torch.Tensor | bool) -> None:
        """Resample the targets in ``mask`` (all when the population changes size to ``count``)."""
        mask = torch.as_tensor(mask, device=self.device).expand(self.targets)
        self.resampled.append(mask)
        identity = torch.arange(self.particles, device=self.device)[:, None].expand(self.particles, self.targets)
        if not bool(mask.any()):
            self.ancestry.append(identity)
            return
        ancestors = systematic_resample(self.log_weights, count)
        if count == self.particles:
            ancestors = torch.where(mask, ancestors, identity)
        flat = (ancestors * self.targets + torch.arange(self.targets, device=self.device)).reshape(-1)
        mean_log_weight = self.log_weights.logsumexp(0) - math.log(self.particles)
        self.log_weights = torch.where(mask, mean_log_weight, self._gather(self.log_weights, ancestors))
        for name in ("log_likelihood", "log_prior", "log_proposal", "log_target"):
            setattr(self, name, self._gather(getattr(self, name), ancestors))
        # Copied when read (see the class docstring); ancestors of ancestors compose.
        pending = self._canvas_ancestors
        self._canvas_ancestors = ancestors if pending is None else self._gather(pending, ancestors)
        self.history = {name: self._gather(value, ancestors) for name, value in self.history.items()}
        # The next step advances the rows ``flat`` of the states (Stepwise.advance_and_compare),
        # which a brush does without copying them first.
        self.state_rows = flat if self.state_rows is None else self.state_rows[flat]
        self.ancestry.append(ancestors)
        self.particles = count

    def rejuvenate(self, step: int, score_candidates: bool) -> None:
        """One Metropolis-Hastings move of every particle's prefix, invariant for ``gamma_t``
        (with ``intermediate="model"``: the prior of the prefix times its tempered likelihood)."""
        accept = self._move(self.tempering[step], score_candidates)
        self.accepted += accept.float().mean(0)
        self.moves += 1
        self.log_target = self._log_target(step)  # the weights stay: gamma_t is invariant

    def cool(self, schedule: CoolingSchedule, ess_threshold: float) -> torch.Tensor:
        """Cool the finished programs through ``schedule``: at each stage reweight to the
        likelihood's next exponent, resample (always to the schedule's particles at the first
        stage) and move every particle ``schedule.moves`` times; every move's program is a
        candidate reconstruction. Returns the moves' acceptance rate per target ``(B,)``."""
        accepted = torch.zeros(self.targets, device=self.device)
        exponent = 1.0
        for stage, next_exponent in enumerate(schedule.exponents):
            self.log_weights = self.log_weights + (next_exponent - exponent) * self.log_likelihood
            exponent = next_exponent
            low_ess = effective_sample_size(self.log_weights) < ess_threshold * self.particles
            self.resample(schedule.particles, stage == 0 or low_ess)
            for _ in range(schedule.moves):
                accepted += self._move(exponent, score_candidates=True).float().mean(0)
        return accepted / (len(schedule.exponents) * schedule.moves)

    def _move(self, exponent: float, score_candidates: bool) -> torch.Tensor:
        """One Metropolis-Hastings move of every particle's prefix, invariant for its prior times
        its likelihood to the power ``exponent``; returns which were accepted ``(N, B)``."""
        move = self.mover(self.history, self.canvas if self.mover.reads_canvas else None, self.images)
        proposed = move.actions
        canvas = self._view(self.stepwise.canvas(self._replay(proposed)))
        self.spent += self.particles
        # One pass over the pixels gives the likelihood and, for the candidates, the l2.
        error = squared_error(canvas, self.images)
        log_likelihood = self.prog.log_likelihood(canvas, self.images, error)
        log_prior = self.prog.log_prior(proposed, check=False)
        log_ratio = (log_prior - self.log_prior + exponent * (log_likelihood - self.log_likelihood)
                     + move.log_q_ratio(canvas))
        accept = metropolis_accept(log_ratio)
        if score_candidates:
            self._score(canvas, proposed, error / math.prod(canvas.shape[-3:]))
        self.history = select_actions(accept, proposed, self.history)
        self.log_likelihood = torch.where(accept, log_likelihood, self.log_likelihood)
        self.log_prior = torch.where(accept, log_prior, self.log_prior)
        self.canvas = torch.where(accept.view(*accept.shape, 1, 1, 1), canvas, self.canvas)
        # The state must follow the accepted prefixes. Replaying them re-derives it without
        # reading a canvas (compute, not a render); the next step does it, once for all moves.
        self.state, self.state_rows = None, None
        return accept

    def record_candidates(self) -> None:
        """Score the finished programs of the last step as reconstructions."""
        self._score(self.canvas, self.history)

    # -- the result -------------------------------------------------------------------------

    def result(self) -> Result:
        last_step = torch.zeros(self.targets, dtype=torch.bool, device=self.device)  # nothing resampled after it
        diagnostics: dict[str, Any] = {
            "ess": torch.stack(self.ess),
            "resampled": torch.stack(self.resampled + [last_step]),
            "ancestry": list(self.ancestry),
        }
        if self.moves:
            diagnostics["acceptance_rate"] = self.accepted / self.moves
        return Result(
            images=self.best.images,
            actions=self.best.actions,
            l2=self.best.l2,
            renders=torch.zeros(self.targets, dtype=torch.long),
            seconds=0.0,
            curve=self.curve(),
            log_weights=self.log_weights,
            ess=self.ess[-1],
            log_evidence=self.log_weights.logsumexp(0) - math.log(self.particles),
            diagnostics=diagnostics,
        )

    def curve(self) -> Curve:
        """The best l2 so far against the renders spent."""
        return Curve(torch.tensor(self.curve_renders), torch.stack(self.curve_l2).cpu())

    # -- helpers ----------------------------------------------------------------------------

    def _log_target(self, step: int) -> torch.Tensor:
        """``log gamma_t`` of every particle's prefix of ``step + 1`` actions (module docstring)."""
        if step == self.prog.steps - 1:
            return self.log_prior + self.log_likelihood  # the posterior's, whatever came before
        prefix = self.log_proposal if self.engine.intermediate == "proposal" else self.log_prior
        return prefix + self.tempering[step] * self.log_likelihood

    def _score(self, canvas: torch.Tensor, actions: Mapping[str, torch.Tensor], l2: torch.Tensor | None = None) -> None:
        if l2 is None:
            l2 = mean_squared_error(canvas, self.images)
        self.best.update(l2, canvas, actions)
        self.curve_renders.append(self.spent)
        self.curve_l2.append(self.best.l2.clone())

    def _replay(self, history: Mapping[str, torch.Tensor]) -> Any:
        stepwise = self.stepwise
        state = stepwise.initial(self.particles * self.targets, device=self.device)
        for step in range(next(iter(history.values())).shape[-1]):
            state = stepwise.advance(state, {name: value[..., step].reshape(-1) for name, value in history.items()})
        return state

    def _view(self, canvas: torch.Tensor) -> torch.Tensor:
        return canvas.view(self.particles, self.targets, *canvas.shape[1:])

    @staticmethod
    def _gather(values: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
        """``values[ancestors[i, b], b]`` for every new particle ``i`` and target ``b``."""
        targets = values.shape[1]
        # Whole rows of the particle-major batch: index_select copies each canvas as one
        # block, where gather would read an index per pixel.
        rows = (ancestors * targets + torch.arange(targets, device=ancestors.device)).reshape(-1)
        picked = values.reshape(-1, *values.shape[2:]).index_select(0, rows)
        return picked.view(*ancestors.shape, *values.shape[2:])

    def _check_proposal(self, action: Any, log_q: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        shape = (self.particles, self.targets)
        validate_actions(self.prog.action_space, action)
        action = {name: value.to(device=self.device, dtype=torch.long) for name, value in action.items()}
        for name, value in action.items():
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"the proposal returned action {name!r} of shape {tuple(value.shape)}; expected (particles, "
                    f"targets) = {shape}"
                )
        if not isinstance(log_q, torch.Tensor):
            raise TypeError(f"the proposal must return log_q as a tensor of shape {shape}, got {type(log_q).__name__}")
        try:
            log_q = log_q.to(self.device).expand(shape)
        except RuntimeError:
            raise ValueError(f"the proposal's log_q has shape {tuple(log_q.shape)}; expected {shape}") from None
        if not bool(torch.isfinite(log_q).all()):
            raise ValueError("the proposal's log_q must be finite: the log-probability of actions it drew")
        return action, log_q
