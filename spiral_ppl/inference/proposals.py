r"""Step-wise proposals: how a particle method draws the next action of each program.

A step proposal subclasses :class:`StepProposal` and implements

.. code-block:: python

    propose(program, step, history, canvas, images) -> (action, log_q)

where ``history`` holds the actions drawn so far, ``{name: LongTensor[N, B, step]}`` for
``N`` particles of each of ``B`` targets, ``canvas`` the particles' current canvases
``(N, B, C, H, W)`` (the blank canvas before the first step) and ``images`` the targets
``(B, C, H, W)``. It returns the next action ``{name: LongTensor[N, B]}`` and its log
proposal probability :math:`\log q(a_t \mid a_{<t}, x)`, shape ``(N, B)``. Rendering is
not the proposal's business: the engine renders and counts.

A proposal declares whether it looks at the canvases in :attr:`StepProposal.reads_canvas`
(``True`` unless a subclass says otherwise). One that sets ``reads_canvas = False`` is passed
``canvas=None``, and the engine need not gather the canvases of resampled particles before
the next step (they are replaced by the step's own canvases). A proposal that draws canvases
of its own declares how many per particle and step in
:attr:`StepProposal.renders_per_proposal`, and the engine pays for them from its budget.

Three proposals are built in: :class:`PriorProposal` draws from the program's prior,
:class:`ResidualStepProposal` places the next step's locations where the canvas misses the
target, and :class:`GuideProposal` turns any Pyro guide ``guide(image)`` over the sites
``step_{t}/{component}`` into step proposals by conditioning it on each particle's history.
A policy that looks at the canvas (the SPIRAL agent) subclasses :class:`StepProposal`; a
:class:`~spiral_ppl.inference.importance.RenderingGuide` that has such a proposal returns it
from ``step_proposal()``, and :func:`as_step_proposal` uses it in the guide's place.

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.proposals import PriorProposal
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3)
    >>> images = torch.zeros(2, 1, 16, 16)
    >>> history = {c.name: torch.zeros(5, 2, 0, dtype=torch.long) for c in prog.action_space}
    >>> action, log_q = PriorProposal().propose(prog, 0, history, images.expand(5, 2, 1, 16, 16), images)
    >>> action["end_point"].shape, log_q.shape
    (torch.Size([5, 2]), torch.Size([5, 2]))
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Mapping

import pyro
import torch
from pyro import poutine

from spiral_ppl.checks import non_negative_int
from spiral_ppl.inference.importance import RenderingGuide
from spiral_ppl.inference.moves import check_uniform_share, residual_step
from spiral_ppl.programs.base import Program, site_name


class StepProposal(abc.ABC):
    """Base class of step proposals (see the module docstring)."""

    #: Whether :meth:`propose` looks at the particles' canvases; ``False`` gets ``canvas=None``.
    reads_canvas: bool = True
    #: Canvases :meth:`propose` draws itself per particle, on top of the particle's own canvas.
    renders_per_proposal: int = 0
    #: Whether :meth:`propose` draws from the program's prior, so that its ``log_q`` is the
    #: prior's too and the engine need not score the step again.
    is_prior: bool = False

    @abc.abstractmethod
    def propose(
        self,
        program: Program,
        step: int,
        history: Mapping[str, torch.Tensor],
        canvas: torch.Tensor | None,
        images: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The next action ``{name: LongTensor[N, B]}`` of every particle and its log proposal
        probability ``(N, B)``, given the particles' ``history`` ``{name: LongTensor[N, B, step]}``,
        their ``canvas`` ``(N, B, C, H, W)`` (``None`` unless :attr:`reads_canvas`) and the
        targets ``images`` ``(B, C, H, W)``."""


def _particles_and_targets(history: Mapping[str, torch.Tensor]) -> torch.Size:
    return next(iter(history.values())).shape[:2]


class PriorProposal(StepProposal):
    """Draws each component of step ``t`` from the program's prior for it, given the particle's
    earlier steps (:meth:`Program.step_prior <spiral_ppl.programs.Program.step_prior>`).

    With priors fixed per step, all components of all particles are drawn in one call of the
    program's :class:`~spiral_ppl.programs.prior_table.PriorTable`.
    """

    reads_canvas = False
    is_prior = True

    def propose(self, program, step, history, canvas, images):
        return program.step_prior(step, history)

    def __repr__(self) -> str:
        return "PriorProposal()"


class ResidualStepProposal(StepProposal):
    """Draws each particle's next step where its canvas misses the target: a data-driven
    proposal for any program with location components.

    Each location component of step ``t`` is drawn from the particle's residual,
    :math:`(x - c)^2` summed over channels and averaged over the component's grid cells,
    mixed with a uniform of weight ``uniform`` so that every cell stays possible
    (:func:`~spiral_ppl.inference.moves.residual_step`); the other components come
    from the program's fixed per-step tables (:meth:`Program.proposal_table
    <spiral_ppl.programs.Program.proposal_table>`: the prior, where it is fixed). ``log_q``
    is that proposal's density, so the weights stay exact. On a program without location
    components it is the prior proposal.

    :param uniform: the weight of the uniform part of each location's proposal, in (0, 1].
    """

    def __init__(self, uniform: float = 0.2) -> None:
        self.uniform = check_uniform_share(uniform)

    def propose(self, program, step, history, canvas, images):
        if not any(c.kind == "location" for c in program.action_space):
            return program.step_prior(step, history)  # nothing to place: every component from its table
        steps = torch.full(_particles_and_targets(history), step, dtype=torch.long, device=images.device)
        return residual_step(program, steps, canvas, images, self.uniform)

    def __repr__(self) -> str:
        return f"ResidualStepProposal(uniform={self.uniform})"


class GuideProposal(StepProposal):
    """Step proposals from a Pyro guide over the program's sites.

    :param guide: a callable ``guide(image)`` that samples the sites
        ``step_{t}/{component}`` for a plate of targets at dim -1, in step order, each step
        depending on earlier ones only (as a policy does, and a mean-field guide trivially).

    At step ``t`` the guide runs in a ``particles`` plate (dim -2) under
    :func:`pyro.poutine.condition` on each particle's steps ``< t``; its step-``t`` sites
    are the proposal. Later sites are drawn too and discarded, so a guide of ``T`` steps
    runs ``T`` times per particle; a guide that can stop early should implement
    ``propose`` itself. A :class:`~spiral_ppl.inference.importance.RenderingGuide` draws its
    ``renders_per_sample`` canvases at every one of those runs, and each is charged.
    """

    def __init__(self, guide: Callable[..., Any]) -> None:
        if not callable(guide):
            raise TypeError(f"guide must be a callable Pyro guide guide(image), got {type(guide).__name__}")
        self.guide = guide
        if isinstance(guide, RenderingGuide):
            self.renders_per_proposal = non_negative_int("guide.renders_per_sample", guide.renders_per_sample)

    reads_canvas = False

    def propose(self, program, step, history, canvas, images):
        shape = _particles_and_targets(history)
        observed = {
            site_name(past, component.name): history[component.name][..., past]
            for past in range(step)
            for component in program.action_space
        }
        with poutine.block(), pyro.plate("particles", shape[0], dim=-2):
            guide_trace = poutine.trace(poutine.condition(self.guide, data=observed)).get_trace(images)
        action, log_q = {}, torch.zeros(shape, device=images.device)
        for component in program.action_space:
            name = site_name(step, component.name)
            node = guide_trace.nodes.get(name)
            if node is None or node["type"] != "sample":
                raise ValueError(
                    f"the guide did not sample the site {name!r}; a guide must sample every "
                    "step_{t}/{component} of the program"
                )
            action[component.name] = node["value"].long().expand(shape)
            log_q = log_q + node["fn"].log_prob(node["value"]).expand(shape)
        return action, log_q

    def __repr__(self) -> str:
        return f"GuideProposal({getattr(self.guide, '__name__', type(self.guide).__name__)})"


def as_step_proposal(proposal: Any) -> StepProposal:
    """``None`` or ``"prior"`` -> :class:`PriorProposal`; ``"residual"`` ->
    :class:`ResidualStepProposal`; a :class:`StepProposal` as is; a guide -> its
    ``step_proposal()`` where it is a :class:`~spiral_ppl.inference.importance.RenderingGuide`
    that has one, else :class:`GuideProposal`."""
    if proposal is None:
        return PriorProposal()
    if isinstance(proposal, str):
        named = {"prior": PriorProposal, "residual": ResidualStepProposal}
        if proposal not in named:
            raise ValueError(f"proposal must be 'prior', 'residual', a spiral_ppl.inference.StepProposal or a "
                             f"Pyro guide, got {proposal!r}")
        return named[proposal]()
    if isinstance(proposal, StepProposal):
        return proposal
    if isinstance(proposal, RenderingGuide):
        own = proposal.step_proposal()
        if own is not None:
            if not isinstance(own, StepProposal):
                raise TypeError(f"{type(proposal).__name__}.step_proposal() must return a "
                                f"spiral_ppl.inference.StepProposal or None, got {type(own).__name__}")
            return own
    if hasattr(proposal, "propose"):
        raise TypeError(
            f"proposal {type(proposal).__name__} has a propose method but is no "
            "spiral_ppl.inference.StepProposal; subclass StepProposal, which declares reads_canvas"
        )
    if callable(proposal):
        return GuideProposal(proposal)
    raise TypeError(
        "proposal must be None or 'prior', 'residual', a spiral_ppl.inference.StepProposal, "
        f"or a Pyro guide callable, got {type(proposal).__name__}"
    )
