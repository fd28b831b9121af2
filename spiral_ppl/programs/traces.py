r"""Programs one run at a time: traces of choices, re-running a model on changed choices, and
enumerating every run of a tiny model.

A model with Python control flow (a number of objects drawn first, a radius drawn only for
discs) has no fixed steps: each run makes its own random choices. A run is a *trace*
:math:`x = \{(\alpha, v_\alpha)\}`, a value :math:`v_\alpha` at each address
:math:`\alpha` it visited, in the order visited, and its joint with the target image is

.. math::

    \log p(x, \mathrm{image}) = \sum_{\alpha \in x} \log p_\alpha(v_\alpha \mid
    \text{the choices before } \alpha) + \log p(\mathrm{image} \mid \mathrm{canvas}(x)).

Two operations work from the model's addresses alone, for any program (Gen's generative
functions have the same pair: ``generate``/``regenerate`` and exhaustive enumeration):

- :func:`run_trace` runs the model once, every choice ``forced`` to a value, ``kept`` from an
  earlier trace where that trace has the address and the value is still in the site's
  support, or else drawn fresh from the site's prior. It is how importance sampling draws a
  program (nothing forced or kept) and how :class:`~spiral_ppl.inference.TraceMH` proposes
  a change at one address.
- :func:`enumerate_traces` visits every run of a tiny model by depth-first search over the
  choices, and :func:`exact_posterior_of_traces` normalises their joints: the ground truth
  that engines are tested against.

The model is ``prog.model`` for one target; each complete run is one render, charged to the
program's meter as any render is. Latent sites must be ``Categorical``; ``poutine.scale``
is respected. ``poutine.mask`` leaves masked pixels of the image out of the likelihood; on a
latent site it says the value does not matter there, and the site is integrated out from
its prior, whose term counts as any other's (as :class:`~spiral_ppl.programs.PyroProgram`
and Pyro's exact enumeration read it).

Example: how many dots, then where::

    >>> import pyro, pyro.distributions as dist, torch, spiral_ppl as sp
    >>> def dots(image=None, batch_size=1):
    ...     canvas = torch.zeros(1, 1, 2, 2)
    ...     count = pyro.sample("count", dist.Categorical(torch.tensor([0.5, 0.5])))
    ...     for i in range(int(count) + 1):
    ...         cell = pyro.sample(f"dot_{i}/cell", dist.Categorical(logits=torch.zeros(4)))
    ...         canvas.view(-1)[cell] = 1.0
    ...     pyro.sample("image", dist.Normal(canvas, 0.3).to_event(3), obs=image)
    ...     return canvas
    >>> prog = sp.programs.PyroProgram(dots)
    >>> prog.fixed_structure
    False
    >>> target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    >>> trace = sp.programs.run_trace(prog, target, forced={"count": 0, "dot_0/cell": 0})
    >>> trace.choices
    {'count': 0, 'dot_0/cell': 0}
    >>> len(sp.programs.enumerate_traces(prog, target))  # 4 one-dot runs and 16 two-dot runs
    20
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import torch
from pyro.poutine.messenger import Messenger

from spiral_ppl import checks
from spiral_ppl.programs.pyro_program import IMAGE_SITE, isolated


@dataclass
class ProgramTrace:
    """One run of a program's model on one target.

    :ivar choices: ``{address: value}`` in the order the run visited them.
    :ivar sizes: ``{address: number of values}`` of each site's ``Categorical``.
    :ivar log_probs: ``{address: log p_α(v_α | earlier choices)}``, the joint's terms (times
        the site's scale; a mask on a latent site does not change them).
    :ivar proposal_log_probs: ``{address: log p_α(v_α | ...)}`` unmasked and unscaled: what
        drawing the value fresh from the site's prior costs a proposal.
    :ivar fresh: the addresses drawn fresh from their priors in this run (not forced or kept).
    :ivar canvas: ``(1, C, H, W)`` the canvas the run returned.
    :ivar log_likelihood: ``log p(image | canvas)``, ``nan`` when the run had no image.
    """

    choices: dict[str, int]
    sizes: dict[str, int]
    log_probs: dict[str, float]
    proposal_log_probs: dict[str, float]
    fresh: frozenset[str]
    canvas: torch.Tensor
    log_likelihood: float

    @property
    def log_prior(self) -> float:
        """:math:`\\sum_\\alpha \\log p_\\alpha(v_\\alpha \\mid \\ldots)`."""
        return math.fsum(self.log_probs.values())

    @property
    def log_joint(self) -> float:
        """``log_prior + log_likelihood``."""
        return self.log_prior + self.log_likelihood

    def key(self) -> tuple[tuple[str, int], ...]:
        """The choices as a hashable tuple of ``(address, value)``, to count runs."""
        return tuple(self.choices.items())


class _Branch(Exception):
    """Raised by a run that meets a choice nobody forced, to enumerate its values."""

    def __init__(self, address: str, size: int) -> None:
        super().__init__(address)
        self.address, self.size = address, size


class _Regenerate(Messenger):
    """Forces, keeps or freshly draws each latent choice of a run, recording every site."""

    def __init__(self, forced: Mapping[str, int], kept: Mapping[str, int], branch: bool) -> None:
        super().__init__()
        self.forced, self.kept, self.branch = forced, kept, branch
        self.choices: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.log_probs: dict[str, float] = {}
        self.proposal_log_probs: dict[str, float] = {}
        self.fresh: set[str] = set()
        self.log_likelihood = math.nan

    def _pyro_sample(self, msg: dict) -> None:
        if type(msg["fn"]).__name__ == "_Subsample":
            return
        name, fn = msg["name"], msg["fn"]
        if name == IMAGE_SITE:
            if msg["value"] is None:  # no target: the canvas is what matters, not a noisy sample of it
                msg["value"] = torch.zeros(fn.shape())
                msg["done"] = True
            return
        if msg["is_observed"]:
            raise ValueError(f"site {name!r} is observed; only the site 'image' may be")
        if not isinstance(fn, torch.distributions.Categorical):
            raise ValueError(f"site {name!r} draws from {type(fn).__name__}; latent sites must be Categorical "
                             "(a discrete choice of 0 .. size - 1)")
        if fn.batch_shape.numel() != 1:
            raise ValueError(f"site {name!r} has batch shape {tuple(fn.batch_shape)}; a program run one at a time "
                             "draws one value per site")
        size = int(fn.logits.shape[-1])
        value = self.forced.get(name)
        if value is None and name in self.kept and 0 <= self.kept[name] < size:
            value = self.kept[name]
        if value is None and self.branch:
            raise _Branch(name, size)
        if value is not None:
            if not 0 <= value < size:
                raise ValueError(f"forced value {value} at site {name!r} is outside its values 0 .. {size - 1}")
            msg["value"] = torch.full(fn.batch_shape, value, dtype=torch.long, device=fn.logits.device)
        else:
            self.fresh.add(name)

    def _pyro_post_sample(self, msg: dict) -> None:
        if type(msg["fn"]).__name__ == "_Subsample":
            return
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        if name == IMAGE_SITE:
            if msg["is_observed"]:
                self.log_likelihood = float(_masked(fn.log_prob(value), msg).sum())
            return
        log_prob = fn.log_prob(value)
        self.choices[name] = int(value.reshape(()))
        self.sizes[name] = int(fn.logits.shape[-1])
        self.proposal_log_probs[name] = float(log_prob.sum())
        self.log_probs[name] = float(_scaled(log_prob, msg).sum())


def _scaled(log_prob: torch.Tensor, msg: dict) -> torch.Tensor:
    scale = msg["scale"]
    return log_prob * scale if not isinstance(scale, (int, float)) or scale != 1.0 else log_prob


def _masked(log_prob: torch.Tensor, msg: dict) -> torch.Tensor:
    mask = msg["mask"]
    if mask is not None:
        log_prob = log_prob * torch.as_tensor(mask, dtype=log_prob.dtype)
    return _scaled(log_prob, msg)


def run_trace(prog: Any, image: torch.Tensor | None = None, *, forced: Mapping[str, int] | None = None,
              kept: Mapping[str, int] | None = None, check: bool = True, _branch: bool = False) -> ProgramTrace:
    """Run ``prog.model`` once on one target (see the module docstring).

    :param prog: a :class:`~spiral_ppl.programs.Program`.
    :param image: ``(1, C, H, W)`` the target, or ``None`` (no likelihood).
    :param forced: ``{address: value}`` taken wherever the run visits the address.
    :param kept: ``{address: value}`` taken where the run visits the address and the value is
        in the site's support; every other choice is drawn fresh from its prior.
    :param check: validate ``image`` and let Pyro check the model's distributions (engines,
        which checked their targets once and run the model many times, pass ``False``).
    """
    if image is not None and check:
        image = prog.check_images(image)
        if image.shape[0] != 1:
            raise ValueError(f"image must hold one target (1, C, H, W), got {tuple(image.shape)}")
    forced = dict(forced or {})
    for name, value in forced.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"forced[{name!r}] must be an int value of the site, got {value!r}")
    run = _Regenerate(forced, dict(kept or {}), _branch)
    # Pyro's checks of each distribution's arguments and values cost a third of a run of a
    # small model; the hot loops of engines (check=False) run a model those checks have passed.
    with isolated(), pyro.validation_enabled(check), run:
        canvas = prog.model(image)
    expected = (prog.channels, prog.image_size, prog.image_size)
    if not isinstance(canvas, torch.Tensor) or tuple(canvas.shape[-3:]) != expected or canvas[..., 0, 0, 0].numel() != 1:
        found = tuple(canvas.shape) if isinstance(canvas, torch.Tensor) else type(canvas).__name__
        raise ValueError(f"the model of {prog!r} returned {found}; a run of one program returns its canvas "
                         f"(1, {', '.join(map(str, expected))})")
    unused = sorted(set(forced) - set(run.choices))
    if unused and not _branch:
        raise ValueError(f"forced addresses {unused[:4]} were not visited by the run; it visited "
                         f"{list(run.choices)[:8]}")
    return ProgramTrace(choices=run.choices, sizes=run.sizes, log_probs=run.log_probs,
                        proposal_log_probs=run.proposal_log_probs, fresh=frozenset(run.fresh),
                        canvas=canvas.reshape(1, *expected), log_likelihood=run.log_likelihood)


def enumerate_traces(prog: Any, image: torch.Tensor | None = None, *, max_programs: int = 100_000) -> list[ProgramTrace]:
    """Every run of a tiny model: one trace per combination of choices it can make.

    Depth-first: a run stops at the first choice not yet decided, and is restarted once per
    value of it. Only complete runs render.

    :param max_programs: refuse models with more runs than this.
    """
    checks.positive_int("max_programs", max_programs, hint="most runs of the model to enumerate")
    if image is not None:
        image = prog.check_images(image)
    complete: list[ProgramTrace] = []
    pending: list[dict[str, int]] = [{}]
    while pending:
        forced = pending.pop()
        try:
            trace = run_trace(prog, image, forced=forced, check=False, _branch=True)
        except _Branch as branch:
            pending.extend({**forced, branch.address: value} for value in reversed(range(branch.size)))
            continue
        complete.append(trace)
        if len(complete) > max_programs:
            raise ValueError(f"{prog!r} has more than max_programs={max_programs} runs; exact enumeration is "
                             "for tiny models")
    return complete


def exact_posterior_of_traces(traces: list[ProgramTrace]) -> tuple[float, dict[tuple, float]]:
    """``log p(image)`` and the posterior probability of each run, from every run's joint."""
    log_joints = torch.tensor([trace.log_joint for trace in traces], dtype=torch.float64)
    log_evidence = torch.logsumexp(log_joints, 0)
    probs = torch.exp(log_joints - log_evidence)
    posterior: dict[tuple, float] = {}
    for trace, prob in zip(traces, probs.tolist()):
        posterior[trace.key()] = posterior.get(trace.key(), 0.0) + prob
    return float(log_evidence), posterior


def empirical_posterior(samples: list[Mapping[str, int]], log_weights: torch.Tensor | None = None) -> dict[tuple, float]:
    """The distribution over runs of weighted (or equally weighted) samples ``{address: value}``."""
    if log_weights is None:
        weights = [1.0 / len(samples)] * len(samples)
    else:
        weights = torch.softmax(log_weights.double().reshape(-1), 0).tolist()
    posterior: dict[tuple, float] = {}
    for choices, weight in zip(samples, weights):
        key = tuple(choices.items())
        posterior[key] = posterior.get(key, 0.0) + weight
    return posterior


def total_variation(first: Mapping[Any, float], second: Mapping[Any, float]) -> float:
    """:math:`\\frac12 \\sum_x |p(x) - q(x)|` of two distributions over the same kind of keys."""
    return 0.5 * math.fsum(abs(first.get(key, 0.0) - second.get(key, 0.0)) for key in set(first) | set(second))
