r"""A program's prior as flat tables: draw or score any number of sites in one call.

Every site ``step_{t}/{component}`` of a program has a categorical prior
:math:`\pi_{t,k}`. Engines draw and score sites by the thousand at each step (all components
of one step for every particle, chain and target), where one ``Categorical`` per component
and step costs far more than the draws themselves. A :class:`PriorTable` lays the priors of
all components and steps end to end, segment :math:`s = k T + t` holding
:math:`\pi_{t,k}` (``T`` steps, component index ``k``), so that

- scoring is one gather from the flat table of log-probabilities, and
- sampling is one :func:`torch.searchsorted` by the inverse CDF: segment ``s`` spans the
  interval :math:`[s, s + 1)` of the line, value ``j`` of it the sub-interval
  :math:`[s + F_{j-1}, s + F_j)` with :math:`F` the normalised cumulative probabilities;
  a point :math:`s + u`, :math:`u \sim U[0, 1)`, falls in value ``j`` with probability
  :math:`\pi_{t,k}(j)`.

The boundaries are float64 and ``u`` is a float32 uniform (at most :math:`1 - 2^{-24}`)
widened to float64, so :math:`s + u` is exact and stays below :math:`s + 1`: a point never
leaves its segment, and values of probability zero (empty sub-intervals) are never drawn.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=3,
    ...                                  priors={"flag": [0.0, 1.0]})
    >>> table = prog.prior_table()
    >>> steps = torch.tensor([[0, 2], [1, 1]])  # the step of each of 2 x 2 sites
    >>> action = table.sample(steps)  # every component at those steps
    >>> action["flag"].tolist(), action["end_point"].shape
    ([[1, 1], [1, 1]], torch.Size([2, 2]))
    >>> table.log_prob(steps, action).shape  # summed over the components
    torch.Size([2, 2])
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from spiral_ppl.renderers.base import Component


class PriorTable:
    """The priors of every component at every step of a program, in flat tables on one device.

    :param components: the program's action space, in order.
    :param logits: per component name, ``(steps, size)`` prior logits (unnormalised is fine).
    :param device: where the tables live.
    """

    def __init__(
        self, components: Sequence[Component], logits: Mapping[str, torch.Tensor], device: torch.device
    ) -> None:
        self.names = [component.name for component in components]
        self.steps = logits[self.names[0]].shape[0]
        log_probs, boundaries, starts = [], [], []
        start = 0
        for index, name in enumerate(self.names):
            component_log_probs = logits[name].double().log_softmax(-1)  # (steps, size)
            cumulative = component_log_probs.exp().cumsum(-1)
            # Normalised so that each segment ends exactly at s + 1 (x / x == 1 in IEEE).
            cumulative = cumulative / cumulative[:, -1:]
            segments = index * self.steps + torch.arange(self.steps, dtype=torch.float64)
            log_probs.append(component_log_probs.float().reshape(-1))
            boundaries.append((segments[:, None] + cumulative).reshape(-1))
            size = component_log_probs.shape[1]
            starts.append(start + size * torch.arange(self.steps))
            start += size * self.steps
        self.log_probs = torch.cat(log_probs).to(device)
        self.boundaries = torch.cat(boundaries).to(device)
        #: Flat offset of the first value of each segment ``k * steps + t``.
        self.segment_start = torch.cat(starts).to(device)
        self._component_offsets = (torch.arange(len(self.names)) * self.steps).to(device)

    def _segments(self, step: torch.Tensor) -> torch.Tensor:
        """Segments ``(K, *batch)`` of every component at steps ``(*batch)``."""
        return self._component_offsets.view(-1, *([1] * step.dim())) + step

    def sample(self, step: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Fresh values ``{name: LongTensor[*batch]}`` of every component at steps ``step`` ``(*batch)``."""
        segments = self._segments(step)
        uniform = torch.rand(segments.shape, device=segments.device, generator=generator).double()  # float32 draws: see the module doc
        flat = torch.searchsorted(self.boundaries, segments + uniform, right=True)
        return dict(zip(self.names, (flat - self.segment_start[segments]).unbind(0)))

    def site_log_probs(self, step: torch.Tensor, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log prior ``(K, *batch)`` of each component's value at steps ``step`` ``(*batch)``."""
        segments = self._segments(step)
        stacked = torch.stack([values[name] for name in self.names])
        return self.log_probs[self.segment_start[segments] + stacked]

    def log_prob(self, step: torch.Tensor, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log prior ``(*batch)`` of whole actions ``{name: LongTensor[*batch]}`` at steps ``step``."""
        return self.site_log_probs(step, values).sum(0)

    @staticmethod
    def program_steps(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """The step of every site of programs of shape ``(*batch, T)``: ``0 .. T - 1`` along the last dimension."""
        return torch.arange(shape[-1], device=device).expand(*shape)
