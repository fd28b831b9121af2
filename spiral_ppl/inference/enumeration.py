r"""Exact posterior of a tiny program by enumerating every site with Pyro.

For programs small enough that every combination of site values can be rendered, Pyro's
:class:`~pyro.infer.TraceEnum_ELBO` sums the model over all of them in parallel: with every
latent site enumerated and an empty guide, the ELBO is the log evidence

.. math::

    \log Z = \log \sum_a p(a)\, p(x \mid a),

and :meth:`~pyro.infer.TraceEnum_ELBO.compute_marginals` gives the exact posterior marginal
of each site. It is the ground truth the search engines are tested against, and a teaching
aid: the cost is one render per combination, :math:`\prod_{t,k} |A_k|`.

Example::

    >>> import torch, spiral_ppl as sp
    >>> brush = sp.renderers.Brush(canvas_size=8, grid_size=2, sizes=(16,), pressure_levels=1)
    >>> prog = sp.programs.PaintProgram(brush, steps=1, pixel_scale=1.0)
    >>> exact = sp.inference.enumerate_posterior(prog, torch.zeros(1, 1, 8, 8))
    >>> exact.marginals["step_0/flag"].shape, exact.log_evidence.shape
    (torch.Size([1, 2]), torch.Size([1]))
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from spiral_ppl import checks
from spiral_ppl.checks import positive_int
from spiral_ppl.programs.base import Program, site_name
from spiral_ppl.programs.traces import enumerate_traces, exact_posterior_of_traces


@dataclass
class ExactPosterior:
    """:ivar log_evidence: ``(B,)`` exact ``log p(image)`` per target.
    :ivar marginals: ``{site: (B, size)}`` exact posterior probabilities of every site. For a
        program whose structure varies, the probability that a run visits the site and
        takes each value there (a row sums to the probability of visiting it).
    :ivar traces: for a program whose structure varies, per target the posterior probability
        of each run, keyed by its choices ``((address, value), ...)`` in the order visited
        (:meth:`~spiral_ppl.programs.ProgramTrace.key`); ``None`` otherwise.
    """

    log_evidence: torch.Tensor
    marginals: dict[str, torch.Tensor]
    traces: list[dict[tuple, float]] | None = None


def enumerate_posterior(prog: Program, images: torch.Tensor, *, max_programs: int = 10**6) -> ExactPosterior:
    """The exact posterior of ``prog`` given each target, by enumeration (see the module docstring).

    :param max_programs: refuse programs with more combinations of site values than this.
    """
    if not isinstance(prog, Program):
        raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
    images = prog.check_images(images, name="images")
    positive_int("max_programs", max_programs, hint="most combinations of site values to enumerate")
    if not prog.fixed_structure:
        return _enumerate_runs(prog, images, max_programs)
    programs = math.prod(component.size for component in prog.action_space) ** prog.steps
    if programs > max_programs:
        raise ValueError(
            f"{prog!r} has {programs} combinations of site values, more than max_programs={max_programs}; "
            "exact enumeration is for tiny programs"
        )
    # Every combination is rendered at once, and its canvas scored, for (at least) two targets at a time.
    pixels = prog.channels * prog.image_size**2
    checks.fits_in_memory(f"enumerating the {programs:,} programs of {prog!r}",
                          2 * 4 * programs * pixels * max(2, images.shape[0]),
                          remedy="enumerate a smaller program (fewer steps or values per component)", where=images.device)

    def enumerate_choices(site):
        # A component with one value is no choice; Pyro's contraction drops size-1 dims.
        if site["name"] in sites and site["fn"].enumerate_support(expand=False).shape[0] > 1:
            return {"enumerate": "parallel"}
        return {}

    sites = set(prog.site_names())
    model = poutine.infer_config(prog.model, enumerate_choices)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    with torch.no_grad(), warnings.catch_warnings():
        # The one-valued sites are sampled by the model itself, which Pyro warns about.
        warnings.filterwarnings("ignore", message="Found vars in model but not guide")
        log_evidence = torch.stack(
            [-torch.as_tensor(elbo.loss(model, _empty_guide, images[b : b + 1])) for b in range(images.shape[0])]
        )
        # Pyro 1.9's compute_marginals fails on a plate of one target; a copy keeps it at two.
        batch = images if images.shape[0] > 1 else images.expand(2, *images.shape[1:])
        marginals = elbo.compute_marginals(model, _empty_guide, batch)
    probs = {
        site_name(t, c.name): (
            marginals[site_name(t, c.name)].probs.expand(batch.shape[0], c.size)[: images.shape[0]]
            if site_name(t, c.name) in marginals
            else torch.ones(images.shape[0], 1)
        )
        for t in range(prog.steps)
        for c in prog.action_space
    }
    return ExactPosterior(log_evidence=log_evidence.float(), marginals=probs)


def _enumerate_runs(prog: Program, images: torch.Tensor, max_programs: int) -> ExactPosterior:
    """The exact posterior of a model whose structure varies: every run, one target at a time
    (:func:`~spiral_ppl.programs.enumerate_traces`), weighed by its joint."""
    log_evidence, traces = [], []
    for b in range(images.shape[0]):
        runs = enumerate_traces(prog, images[b : b + 1], max_programs=max_programs)
        evidence, posterior = exact_posterior_of_traces(runs)
        log_evidence.append(evidence)
        traces.append(posterior)
    sizes: dict[str, int] = {}
    for run in runs:
        for address, size in run.sizes.items():
            sizes[address] = max(size, sizes.get(address, 0))
    marginals = {address: torch.zeros(images.shape[0], size, dtype=torch.float64) for address, size in sizes.items()}
    for b, posterior in enumerate(traces):
        for key, prob in posterior.items():
            for address, value in key:
                marginals[address][b, value] += prob
    return ExactPosterior(log_evidence=torch.tensor(log_evidence).float(),
                          marginals={address: probs.float() for address, probs in marginals.items()}, traces=traces)


def _empty_guide(image):
    """Every latent site is enumerated in the model, so the guide samples nothing."""
