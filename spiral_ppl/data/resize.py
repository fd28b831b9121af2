"""Square image batches at another side, the one resizing rule of the data sets and recipes.

Going down, each pixel is the mean of the area it covers (no aliasing of thin strokes); going
up, bilinear interpolation (``align_corners=False``), clamped to [0, 1] since a canvas holds
intensities.

Example::

    >>> import torch
    >>> resized(torch.ones(2, 1, 28, 28), 64).shape
    torch.Size([2, 1, 64, 64])
    >>> resized(torch.eye(4)[None, None], 2)[0, 0]
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` ``(N, C, H, W)`` with ``H == W`` at ``size`` x ``size`` (the same tensor when
    it is that size already)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if size < images.shape[-1]:
        return F.interpolate(images, size=(size, size), mode="area").clamp(0, 1)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
