r"""Trace Metropolis-Hastings: single-site moves over a model's addresses, for any program,
whether or not every run visits the same sites.

This is lightweight Metropolis-Hastings (Wingate, Stuhlmüller & Goodman, 2011), the engine
of Church, Venture and Gen's ``mh`` on ``select``-ed addresses. The state is a trace
:math:`x` of the model on one target (:mod:`spiral_ppl.programs.traces`). A move

1. picks an address :math:`\alpha` uniformly among the :math:`|S(x)|` choices of :math:`x`
   that have more than one value;
2. proposes a value :math:`v' \ne v_\alpha` uniformly among that site's other :math:`K - 1`;
3. re-runs the model with :math:`\alpha` forced to :math:`v'`, every other choice of
   :math:`x` kept where the new run visits its address and the value is still in the
   site's support, and the choices the new run makes that :math:`x` lacks (``fresh``) drawn
   from their priors, giving :math:`x'`.

The reverse move picks :math:`\alpha` in :math:`x'`, proposes :math:`v_\alpha` (again one
of :math:`K - 1`: the choices before :math:`\alpha` are the same, so is its distribution),
keeps what both traces share and draws the choices of :math:`x` that :math:`x'` lacks
(``stale``) from their priors. So a move is accepted with probability
:math:`\min(1, A)`,

.. math::

    \log A = \log p(x', \mathrm{image}) - \log p(x, \mathrm{image})
             + \log |S(x)| - \log |S(x')|
             + \sum_{\beta \in \mathrm{stale}} \log p(v_\beta \mid x)
             - \sum_{\beta \in \mathrm{fresh}} \log p(v'_\beta \mid x').

When every run visits the same sites, nothing is fresh or stale and :math:`|S|` is constant:
it is single-site MH with a uniform proposal. A reverse run that would keep a value of
:math:`x'` differing from :math:`x`'s at an address both visit (a value that fell out of a
site's support and was redrawn) cannot return to :math:`x`, so the move is rejected.

Each move is one run of the model, one render. A budget of :math:`N` renders per target
gives each of ``chains`` chains one run to start and the rest in moves (the remainder of
:math:`N` by ``chains`` to the first ones). The model runs one program at a time, so this
engine is for small models, and for models whose structure varies, where the batched
engines cannot go.

Example: a dot (which has a cell) or a bar (which has a row) on a 2x2 canvas::

    >>> import pyro, pyro.distributions as dist, torch, spiral_ppl as sp
    >>> def mark(image=None, batch_size=1):
    ...     canvas = torch.zeros(1, 1, 2, 2)
    ...     if int(pyro.sample("kind", dist.Categorical(torch.tensor([0.5, 0.5])))) == 0:
    ...         canvas.view(-1)[pyro.sample("cell", dist.Categorical(logits=torch.zeros(4)))] = 1.0
    ...     else:
    ...         canvas[0, 0, pyro.sample("row", dist.Categorical(logits=torch.zeros(2)))] = 1.0
    ...     pyro.sample("image", dist.Normal(canvas, 0.3).to_event(3), obs=image)
    ...     return canvas
    >>> prog = sp.programs.PyroProgram(mark)
    >>> target = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]]])
    >>> result = sp.inference.TraceMH().infer(prog, target, sp.Budget(renders=100), seed=0)
    >>> result.choices, result.l2.tolist(), result.renders.tolist()
    ([{'kind': 1, 'row': 1}], [0.0], [100])

Reference: Wingate, Stuhlmüller & Goodman, "Lightweight implementations of probabilistic
programming languages via transformational compilation", AISTATS 2011; Cusumano-Towner et
al., "Gen", PLDI 2019.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.checks import positive_int
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, check_progress, hide_progress
from spiral_ppl.inference.result import Curve, Result
from spiral_ppl.programs.base import Program, mean_squared_error, site_name
from spiral_ppl.programs.traces import ProgramTrace, run_trace


def propose(prog: Program, image: torch.Tensor, current: ProgramTrace) -> tuple[ProgramTrace, float] | None:
    """One single-site move from ``current``: the proposed trace and :math:`\\log A` (see the
    module docstring), or ``None`` when no choice of ``current`` has a second value."""
    choosable = [name for name, size in current.sizes.items() if size > 1]
    if not choosable:
        return None
    address = choosable[int(torch.randint(len(choosable), ()))]
    size, value = current.sizes[address], current.choices[address]
    new_value = int(torch.randint(size - 1, ()))
    new_value += new_value >= value  # uniform over the other values
    kept = {name: v for name, v in current.choices.items() if name != address}
    proposed = run_trace(prog, image, forced={address: new_value}, kept=kept, check=False)
    return proposed, log_acceptance(current, proposed, address)


def log_acceptance(current: ProgramTrace, proposed: ProgramTrace, address: str) -> float:
    """:math:`\\log A` of the move from ``current`` to ``proposed`` that changed ``address``."""
    stale_log_prob = 0.0
    for name, value in current.choices.items():
        if name == address:
            continue
        reverse_keeps = name in proposed.choices and proposed.choices[name] < current.sizes[name]
        if reverse_keeps and proposed.choices[name] != value:
            return -math.inf  # the reverse run would keep a value x never had
        if not reverse_keeps:
            stale_log_prob += current.proposal_log_probs[name]
    fresh_log_prob = math.fsum(proposed.proposal_log_probs[name] for name in proposed.fresh)
    choosable = sum(size > 1 for size in current.sizes.values())
    choosable_after = sum(size > 1 for size in proposed.sizes.values())
    return (proposed.log_joint - current.log_joint + math.log(choosable) - math.log(choosable_after)
            + stale_log_prob - fresh_log_prob)


class TraceMH(Engine):
    """Single-site trace Metropolis-Hastings behind the shared engine interface (see the module docstring).

    :param chains: chains per target, run one after another; each starts from a run of the
        model from its prior.
    :param warmup: fraction of each chain's moves left out of the samples.
    :param progress: show a progress bar (``None``: only on a terminal).

    ``Result.choices`` holds each target's best program ``{address: value}`` (the lowest l2
    rendered, rejected proposals included); ``Result.actions`` holds it too where the
    program has fixed steps. ``Result.diagnostics`` holds ``acceptance_rate`` ``(B,)``,
    ``samples`` (per target, the chains' states after warm-up, ``{address: value}`` each)
    and ``log_joint`` (per target, the log joint of every state, chain after chain).
    """

    name = "trace-mh"
    needs_fixed_structure = False

    def __init__(self, *, chains: int = 1, warmup: float = 0.2, progress: bool | None = None) -> None:
        self.chains = positive_int("chains", chains)
        self.warmup = checks.number_in("warmup", warmup, 0, 1, open_high=True, hint="of each chain's moves")
        self.progress = check_progress(progress)

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        if budget.renders < self.chains:
            raise ValueError(f"TraceMH with {self.chains} chains needs a budget of at least {self.chains} renders per "
                             f"target (one to start each chain), got {budget.renders}; lower chains or raise the budget")
        runs = [budget.renders // self.chains + (chain < budget.renders % self.chains) for chain in range(self.chains)]
        targets = images.shape[0]
        best: list[ProgramTrace] = []
        best_l2, curves, acceptance, samples, log_joints = [], [], [], [], []
        with tqdm(total=budget.renders * targets, desc=self.name, unit="render",
                  disable=hide_progress(self.progress)) as bar:
            for b in range(targets):
                chains = _TargetChains(images[b : b + 1])
                for length in runs:
                    chains.run_chain(prog, length, self.warmup)
                    bar.update(length)
                best.append(chains.best)
                best_l2.append(chains.best_l2)
                curves.append(chains.curve(budget.renders))
                acceptance.append(chains.accepted / max(chains.moves, 1))
                samples.append(chains.samples)
                log_joints.append(torch.tensor(chains.log_joints))
        return Result(
            images=torch.cat([trace.canvas for trace in best]).to(images.device),
            actions=_as_actions(prog, [trace.choices for trace in best]),
            choices=[dict(trace.choices) for trace in best],
            l2=torch.tensor(best_l2, device=images.device),
            renders=torch.zeros(targets, dtype=torch.long),
            seconds=0.0,
            curve=Curve(torch.arange(1, budget.renders + 1), torch.stack(curves, 1)),
            diagnostics={"acceptance_rate": torch.tensor(acceptance), "samples": samples, "log_joint": log_joints},
        )


class _TargetChains:
    """The chains of one target: their samples, and the best program rendered so far."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image
        self.best: ProgramTrace | None = None
        self.best_l2 = math.inf
        self.rendered_l2: list[float] = []
        self.accepted = self.moves = 0
        self.samples: list[dict[str, int]] = []
        self.log_joints: list[float] = []

    def run_chain(self, prog: Program, length: int, warmup: float) -> None:
        """A chain of one run from the prior and ``length - 1`` moves; keeps its states after warm-up."""
        current = self._rendered(run_trace(prog, self.image, check=False))
        chain = [current]
        for _ in range(length - 1):
            move = propose(prog, self.image, current)
            if move is None:  # no choice has a second value: the chain cannot move
                break
            proposed, log_a = move
            self._rendered(proposed)
            self.moves += 1
            if math.log(max(float(torch.rand(())), 1e-300)) < log_a:
                current = proposed
                self.accepted += 1
            chain.append(current)
        warm = int(warmup * (len(chain) - 1))
        self.samples.extend(state.choices for state in chain[1 + warm :] or chain[-1:])
        self.log_joints.extend(state.log_joint for state in chain)

    def _rendered(self, trace: ProgramTrace) -> ProgramTrace:
        l2 = float(mean_squared_error(trace.canvas, self.image)[0])
        self.rendered_l2.append(l2)
        if l2 < self.best_l2 or self.best is None:
            self.best, self.best_l2 = trace, l2
        return trace

    def curve(self, renders: int) -> torch.Tensor:
        """Best l2 so far after each of ``renders`` renders (held level after a chain that could not move)."""
        l2 = self.rendered_l2 + [self.rendered_l2[-1]] * (renders - len(self.rendered_l2))
        return torch.tensor(l2).cummin(0).values


def _as_actions(prog: Program, choices: list[dict[str, int]]) -> dict[str, torch.Tensor]:
    """Programs ``{name: LongTensor[B, T]}`` of the choices, for a program with fixed steps (else empty)."""
    if not prog.fixed_structure:
        return {}
    return {component.name: torch.tensor([[program[site_name(t, component.name)] for t in range(prog.steps)]
                                          for program in choices])
            for component in prog.action_space}
