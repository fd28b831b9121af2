r"""The SPIRAL policy as a Pyro guide: ``q(a \mid x)`` over the program's sites.

``SpiralGuide(agent)(image)`` samples every site ``step_{t}/{component}`` of the agent's
program from the policy, inside the plate ``targets`` (dim -1) the model uses, so
``pyro.poutine.replay`` of the model on its trace, and hence
:class:`~spiral_ppl.inference.Importance`, work unchanged. Outer plates (Importance's
``particles`` at dim -2) are honoured: the guide flattens the batch of particles and
targets for the network, and gives each site its value in the plates' shape.

To choose its actions the policy looks at the canvases drawn so far: a sighted guide draws
``steps - 1`` intermediate canvases per sample (the model draws the last), a blind one
none. The guide declares this in :attr:`SpiralGuide.renders_per_sample`, which Importance
reads to keep its budget of renders; the canvases are drawn (and counted) with the agent's
program, so give Importance that same program. Given this guide, SMC uses its
:meth:`~SpiralGuide.step_proposal`, the policy as a step proposal that reads the canvases SMC
renders, so ``SMC(agent.guide)`` is ``SMC(agent.proposal)`` at the guide's temperature.

Like the proposal, the guide samples from the tempered policy :math:`q_\tau(a) \propto
\pi(a)^{1/\tau}`, component by component, at ``temperature`` (the agent's
``agent.decoding.temperature`` unless given). Each site's distribution is
the tempered Categorical itself, so the importance weights :math:`p(x, a) / q_\tau(a)` that
Pyro computes stay exact at any temperature.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> agent = sp.inference.Spiral(prog, config=sp.inference.SpiralConfig.small(reward={"kind": "l2"}))
    >>> result = sp.inference.Importance(agent.guide).infer(prog, torch.zeros(3, 1, 16, 16),
    ...                                                     sp.Budget(renders=10), seed=0)
    >>> result.log_weights.shape, result.renders.tolist()  # 10 // (1 + 1) samples of 2 renders
    (torch.Size([5, 3]), [10, 10, 10])
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.runtime import get_plates

from spiral_ppl.inference.importance import RenderingGuide
from spiral_ppl.inference.spiral.policy import check_temperature
from spiral_ppl.inference.spiral.proposal import SpiralProposal
from spiral_ppl.inference.spiral.rollout import rollout
from spiral_ppl.programs.base import site_name


class SpiralGuide(RenderingGuide):
    """A callable Pyro guide ``guide(image)`` backed by a SPIRAL agent's policy.

    :param agent: a :class:`~spiral_ppl.inference.Spiral`.
    :param temperature: of the policy's distributions; ``None``: the agent's ``decoding.temperature``
        at each call.
    """

    def __init__(self, agent, temperature: float | None = None) -> None:
        self.agent = agent
        self._temperature = None if temperature is None else check_temperature(temperature)

    @property
    def temperature(self) -> float:
        """The temperature the guide samples at."""
        return self.agent.decoding.temperature if self._temperature is None else self._temperature

    @property
    def renders_per_sample(self) -> int:
        """Canvases the guide draws per sample, on top of the model's one render."""
        return 0 if self.agent.blind else self.agent.prog.steps - 1

    def step_proposal(self) -> SpiralProposal:
        """The policy as an SMC step proposal at this guide's temperature (it draws no canvas)."""
        return SpiralProposal(self.agent, temperature=self.temperature)

    def __call__(self, image: torch.Tensor, *args, **kwargs) -> None:
        agent = self.agent
        image = agent.prog.check_images(image, name="image (a target of this SPIRAL agent's guide)")
        with pyro.plate("targets", image.shape[0], dim=-1):
            # The shape of every site: the sizes of all active plates, outermost first.
            sizes = {frame.dim: frame.size for frame in get_plates() if frame.dim is not None}
            batch_shape = tuple(sizes.get(dim, 1) for dim in range(min(sizes), 0))
            count = math.prod(batch_shape)
            # The policy computes in float32, whatever float dtype the targets came in.
            targets = image.to(device=agent.device, dtype=torch.float32).expand(*batch_shape, *image.shape[1:]).reshape(count, *image.shape[1:])

            def choose(step: int, component, logits: torch.Tensor) -> torch.Tensor:
                logits = logits.reshape(*batch_shape, component.size).to(image.device)
                value = pyro.sample(site_name(step, component.name), dist.Categorical(logits=logits))
                return value.expand(batch_shape).reshape(count).to(agent.device)

            with agent.learner.autocast():
                rollout(agent.policy, agent.prog, count, targets if agent.conditional else None,
                        blind=agent.blind, draw_final=False, choose=choose, temperature=self.temperature)
