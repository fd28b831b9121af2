r"""The default pixel likelihood: independent Normal noise of one scale on every pixel.

.. math::

    \log p(x \mid \mu) = -\frac{\|x - \mu\|^2}{2 \sigma^2} - n \log \sigma - \frac n2 \log 2\pi,

with :math:`n = C H W`. It equals ``Normal(canvas, scale).to_event(3)`` but computes only
the squared error per image (:func:`~spiral_ppl.squared_error.squared_error`, one
fused pass over the pixels for large batches), which matters because engines score every
rendered canvas: Pyro's ``Normal`` takes the logarithm of the scale at every pixel.

Example::

    >>> import torch
    >>> likelihood = PixelNormal(torch.zeros(2, 1, 4, 4), scale=0.5)
    >>> likelihood.batch_shape, likelihood.event_shape
    (torch.Size([2]), torch.Size([1, 4, 4]))
    >>> round(float(likelihood.log_prob(torch.zeros(1, 4, 4))[0]), 3)  # 16 * log N(0; 0, 0.25)
    -3.613
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from spiral_ppl.checks import positive_number
from spiral_ppl.squared_error import squared_error


class PixelNormal(TorchDistribution):
    """Images ``(*batch, C, H, W)`` around ``loc`` with i.i.d. Normal pixel noise of std ``scale``."""

    arg_constraints = {"loc": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: float, validate_args: bool | None = None) -> None:
        if not isinstance(loc, torch.Tensor) or loc.dim() < 3:
            found = tuple(loc.shape) if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise ValueError(f"PixelNormal needs loc, images (*batch, C, H, W) as a tensor, got {found}")
        positive_number("scale", scale, hint="the pixels' standard deviation")
        self.loc = loc
        self.scale = float(scale)
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.log_prob_of_squared_error(squared_error(value, self.loc))

    def log_prob_of_squared_error(self, error: torch.Tensor) -> torch.Tensor:
        """The log density of images whose squared errors to the mean, summed over the pixels,
        are ``error`` (shape ``batch_shape``), e.g. computed while the canvases were painted."""
        pixels = self.event_shape.numel()
        normaliser = pixels * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
        return -0.5 * error / self.scale**2 - normaliser

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return self.loc.expand(shape) + self.scale * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)

    def expand(self, batch_shape, _instance=None) -> "PixelNormal":
        batch_shape = torch.Size(batch_shape)
        return PixelNormal(self.loc.expand(batch_shape + self.event_shape), self.scale, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.full_like(self.loc, self.scale**2)
