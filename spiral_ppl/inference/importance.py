r"""Importance sampling over a program's sites, from the prior or from any guide.

For each target image :math:`x`, draw :math:`N` programs :math:`a^{(i)} \sim q(a \mid x)`
and weigh them by

.. math::

    \log w^{(i)} = \log p(a^{(i)}) + \log p(x \mid a^{(i)}) - \log q(a^{(i)} \mid x),

which is the likelihood alone when :math:`q` is the prior. The log evidence is estimated
without bias in :math:`\hat Z`:
:math:`\log \hat Z = \operatorname{logsumexp}_i \log w^{(i)} - \log N`, and the effective
sample size is :math:`(\sum_i w^{(i)})^2 / \sum_i (w^{(i)})^2`. Each sample costs one render.

The guide is any Pyro callable ``guide(image)`` that samples the program's latent sites
``step_{t}/{component}`` (and no others) for a plate of targets at dim -1, such as the
SPIRAL policy's ``spiral.guide``. Samples are drawn in vectorised chunks inside a
``particles`` plate at dim -2. A guide that renders canvases itself (the SPIRAL policy
looks at the canvas before each action) subclasses :class:`RenderingGuide` and declares
its cost in :attr:`RenderingGuide.renders_per_sample`; each sample then costs
``1 + renders_per_sample`` renders and a budget of ``N`` renders draws
``N // (1 + renders_per_sample)`` samples. Any other guide renders nothing.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=1)
    >>> target = prog.render({c.name: torch.tensor([[1]]) for c in prog.action_space})
    >>> result = sp.inference.Importance().infer(prog, target, sp.Budget(renders=200), seed=0)
    >>> result.renders.tolist(), result.log_weights.shape
    ([200], torch.Size([200, 1]))

Reference: Pyro's ``pyro.infer.Importance``; Owen, "Monte Carlo theory, methods and
examples" (2013), chapter 9.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from spiral_ppl import checks
from spiral_ppl.checks import non_negative_int, positive_int
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine, check_progress, hide_progress
from spiral_ppl.inference.result import BestSoFar, Curve, Result
from spiral_ppl.programs.base import Program, mean_squared_error, sample_sites
from spiral_ppl.programs.traces import run_trace


def effective_sample_size(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's effective sample size of normalised weights along ``dim``."""
    if not isinstance(log_weights, torch.Tensor) or not log_weights.is_floating_point():
        found = log_weights.dtype if isinstance(log_weights, torch.Tensor) else type(log_weights).__name__
        raise TypeError(f"log_weights must be a float tensor of log importance weights, got {found}")
    return torch.exp(2 * log_weights.logsumexp(dim) - (2 * log_weights).logsumexp(dim))


class RenderingGuide(abc.ABC):
    """Base class of Pyro guides that render canvases themselves, and declare how many.

    A guide is called like any Pyro guide, ``guide(image)``; one that draws canvases with
    the program's step-wise protocol while it samples (each charged to the program's meter)
    subclasses this class, so that :class:`Importance` can keep its budget. A plain guide
    function renders nothing and costs no render.

    Example::

        >>> class Peeking(RenderingGuide):
        ...     renders_per_sample = 2  # it draws two canvases per sample
        ...     def __call__(self, image):
        ...         ...
        >>> Importance(Peeking()).renders_per_sample(), Importance(lambda image: None).renders_per_sample()
        (3, 1)
    """

    #: Canvases the guide draws per sample, on top of the model's one render.
    renders_per_sample: int = 0

    @abc.abstractmethod
    def __call__(self, image, *args, **kwargs):
        """Sample the program's sites ``step_{t}/{component}`` for the targets ``image``."""

    def step_proposal(self):
        """The same distribution as a :class:`~spiral_ppl.inference.StepProposal` that reads the
        canvases SMC renders instead of drawing its own, or ``None`` (the default). Given this
        guide, :class:`~spiral_ppl.inference.SMC` uses it; without one, SMC re-runs the guide on
        every particle's prefix at every step and pays for the canvases the guide draws."""
        return None


class Importance(Engine):
    """Importance sampling from the prior (``guide=None``) or from a guide.

    :param guide: a Pyro guide with the program's site names, or ``None`` for the prior.
    :param max_canvases: most canvases rendered in one vectorised call; bounds memory.
    :param progress: show a progress bar (``None``: only on a terminal).
    """

    name = "importance"
    needs_fixed_structure = False

    def __init__(
        self,
        guide: Callable | None = None,
        *,
        max_canvases: int = 2048,
        progress: bool | None = None,
    ) -> None:
        if guide is not None and not callable(guide):
            raise TypeError(f"guide must be a callable Pyro guide or None, got {type(guide).__name__}")
        self.guide = guide
        self.max_canvases = positive_int("max_canvases", max_canvases)
        self.progress = check_progress(progress)
        if guide is not None:
            self.name = "importance-guide"

    def renders_per_sample(self) -> int:
        """Renders one sample costs: the model's render plus those a :class:`RenderingGuide` declares."""
        if not isinstance(self.guide, RenderingGuide):
            return 1
        return 1 + non_negative_int("guide.renders_per_sample", self.guide.renders_per_sample)

    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        if not prog.fixed_structure:
            return self._infer_one_program_at_a_time(prog, images, budget)
        targets = images.shape[0]
        per_sample = self.renders_per_sample()
        total = budget.renders // per_sample
        if total < 1:
            raise ValueError(
                f"one sample of this guide costs {per_sample} renders per target; the budget of {budget.renders} "
                f"is smaller: give sp.Budget(renders={per_sample}) or more"
            )
        # Every sample's log weight and l2 is kept (and copied into the curve at the end).
        checks.fits_in_memory(f"importance sampling with {total:,} samples per target for {targets} targets",
                              total * (20 * targets + 8), remedy="give a smaller budget")
        per_chunk = max(1, self.max_canvases // targets)
        log_weights, sample_l2 = [], []
        best = BestSoFar(targets, images.device)
        with tqdm(total=total, desc=self.name, unit="sample", disable=hide_progress(self.progress)) as bar:
            for start in range(0, total, per_chunk):
                count = min(per_chunk, total - start)
                chunk_log_weights, canvases, actions = self._sample(prog, images, count)
                l2 = mean_squared_error(canvases, images)  # (count, targets)
                log_weights.append(chunk_log_weights)
                sample_l2.append(l2)

                best.update(l2, canvases, actions)
                bar.update(count)
                bar.set_postfix(best_l2=f"{float(best.l2.mean()):.4f}")

        log_weights = torch.cat(log_weights)
        return Result(
            images=best.images,
            actions=best.actions,
            l2=best.l2,
            renders=torch.zeros(targets, dtype=torch.long),
            seconds=0.0,
            curve=Curve.from_samples(torch.cat(sample_l2).cpu(), renders_per_sample=per_sample),
            log_weights=log_weights,
            ess=effective_sample_size(log_weights),
            log_evidence=log_weights.logsumexp(0) - math.log(total),
        )

    def _infer_one_program_at_a_time(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        """Importance sampling from the prior of a model whose structure varies: one run of the
        model per sample (:func:`~spiral_ppl.programs.run_trace`), weighed by its likelihood.
        ``Result.diagnostics["samples"]`` holds every sample's choices, per target, in the order
        of ``log_weights``."""
        if self.guide is not None:
            raise ValueError(f"{prog!r} runs one program at a time ({prog.structure_note}); importance sampling "
                             "draws its programs from the model's prior: give Importance() without a guide")
        targets, total = images.shape[0], budget.renders
        checks.fits_in_memory(f"importance sampling with {total:,} samples per target for {targets} targets",
                              total * targets * 1024, remedy="give a smaller budget")
        log_weights = torch.empty(total, targets, dtype=torch.float64)
        sample_l2 = torch.empty(total, targets)
        samples: list[list[dict[str, int]]] = []
        best = []
        with tqdm(total=total * targets, desc=self.name, unit="sample", disable=hide_progress(self.progress)) as bar:
            for b in range(targets):
                image, chosen = images[b : b + 1], []
                best_trace, best_l2 = None, math.inf
                for i in range(total):
                    trace = run_trace(prog, image, check=False)
                    log_weights[i, b] = trace.log_likelihood
                    sample_l2[i, b] = l2 = float(mean_squared_error(trace.canvas, image)[0])
                    chosen.append(trace.choices)
                    if l2 < best_l2:
                        best_trace, best_l2 = trace, l2
                bar.update(total)
                samples.append(chosen)
                best.append(best_trace)
        return Result(
            images=torch.cat([trace.canvas for trace in best]).to(images.device),
            actions={},
            choices=[dict(trace.choices) for trace in best],
            l2=sample_l2.min(0).values.to(images.device),
            renders=torch.zeros(targets, dtype=torch.long),
            seconds=0.0,
            curve=Curve.from_samples(sample_l2),
            log_weights=log_weights.float(),
            ess=effective_sample_size(log_weights).float(),
            log_evidence=(log_weights.logsumexp(0) - math.log(total)).float(),
            diagnostics={"samples": samples},
        )

    def _sample(self, prog: Program, images: torch.Tensor, count: int):
        """``count`` weighted samples per target: log weights ``(count, B)``, canvases, actions."""
        with pyro.plate("particles", count, dim=-2):
            if self.guide is None:
                model_trace = poutine.trace(prog.model).get_trace(images)
                guide_trace = None
            else:
                guide_trace = poutine.trace(self.guide).get_trace(images)
                self._check_guide_sites(prog, guide_trace)
                model_trace = poutine.trace(poutine.replay(prog.model, trace=guide_trace)).get_trace(images)
        model_trace.compute_log_prob()
        shape = (count, images.shape[0])
        if guide_trace is None:
            # Prior proposal: the prior terms of p and q cancel.
            log_weight = model_trace.nodes["image"]["log_prob"].expand(shape)
        else:
            guide_trace.compute_log_prob()
            log_weight = sum(_site_log_probs(model_trace, shape)) - sum(_site_log_probs(guide_trace, shape))
        canvases = model_trace.nodes["_RETURN"]["value"]
        return log_weight, canvases, prog.actions_from_trace(model_trace)

    @staticmethod
    def _check_guide_sites(prog: Program, guide_trace: poutine.Trace) -> None:
        guide_sites = set(sample_sites(guide_trace, observed=False))
        model_sites = set(prog.site_names())
        if guide_sites != model_sites:
            missing = sorted(model_sites - guide_sites)[:4]
            extra = sorted(guide_sites - model_sites)[:4]
            raise ValueError(
                "the guide must sample exactly the program's latent sites step_{t}/{component}; "
                f"missing: {missing}, unexpected: {extra}"
            )


def _site_log_probs(trace: poutine.Trace, shape: tuple[int, int]):
    for node in sample_sites(trace).values():
        yield node["log_prob"].expand(shape)
