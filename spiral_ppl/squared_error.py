r"""Squared pixel error of canvases against targets, in one pass over the pixels.

The default likelihood (:class:`~spiral_ppl.programs.PixelNormal`) and the reconstruction
error every engine reports both reduce each canvas :math:`c` against its target :math:`x` to

.. math::

    e(c, x) = \sum_{i=1}^{C H W} (c_i - x_i)^2 .

Search engines compute it for every canvas they render (``chains x targets`` or
``particles x targets`` at a time). Eager ``(c - x).pow(2).sum()`` writes two full-size
temporaries per call, which costs about as much as painting one stroke; fused with
:func:`torch.compile` it reads each canvas once and writes one number per canvas. The fused
kernel is used for calls of at least :data:`FUSE_FROM_PIXELS` pixels (where the compile time
pays back) when no gradient is needed; it sums in another order than the eager one, so the
two agree to float rounding (relative ~1e-7), not bit for bit. A renderer that computes the
error while it paints (:meth:`~spiral_ppl.renderers.Renderer.step_and_compare`) saves even
the one read.

Example::

    >>> import torch
    >>> canvases, targets = torch.zeros(3, 2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    >>> squared_error(canvases, targets)  # 16 pixels of error 0.25, for 3 x 2 pairs
    tensor([[4., 4.],
            [4., 4.],
            [4., 4.]])
    >>> tiled_squared_error(canvases.flatten(0, 1), targets)  # canvas r against target r % 2
    tensor([4., 4., 4., 4., 4., 4.])
"""

from __future__ import annotations

import math

import torch

from spiral_ppl import checks
from spiral_ppl.compiling import CompiledWithFallback, compile_allowed

#: With ``compile=None``, calls comparing at least this many pixels use the fused kernel.
FUSE_FROM_PIXELS = 64 * 64 * 64


def tiled_squared_error(canvases: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Canvases ``(L * M, C, H, W)`` against targets ``(M, C, H, W)`` tiled ``L`` times:
    canvas ``r`` against target ``r % M``. Returns ``(L * M,)``.

    This is the layout of ``L`` particles or chains for each of ``M`` targets, particle-major.
    Plain torch, so that compiled kernels can fuse it with whatever produces the canvases.
    """
    count = targets.shape[0]
    paired = canvases.reshape(-1, count, targets[0].numel()) - targets.reshape(count, -1)
    return paired.square().sum(-1).reshape(-1)


_fused_squared_error: CompiledWithFallback | None = None


def squared_error(images: torch.Tensor, targets: torch.Tensor, *, compile: bool | None = None) -> torch.Tensor:
    """Per-image sum of squared pixel differences over ``(C, H, W)``; leading dimensions broadcast.

    :param compile: use the fused kernel (``True``), the eager one (``False``), or decide by
        size and ``SPIRAL_PPL_COMPILE`` (``None``, see :mod:`spiral_ppl.compiling`). The fused
        kernel needs one operand to broadcast only over leading dimensions of the other (as
        canvases ``(N, B, C, H, W)`` and targets ``(B, C, H, W)`` do) and no gradient; other
        calls are eager.
    """
    _check_compared(images, targets)
    checks.optional_switch("compile", compile, none="decide by size")
    tiling = _as_tiling(images, targets)
    if tiling is not None and _fuse(tiling, compile):
        global _fused_squared_error
        if _fused_squared_error is None:
            _fused_squared_error = CompiledWithFallback(tiled_squared_error, "squared pixel error")
        canvases, tiled, batch_shape = tiling
        # No input needs a gradient: computing without one keeps to one compiled graph
        # whatever the caller's grad mode.
        with torch.no_grad():
            return _fused_squared_error(canvases, tiled).reshape(batch_shape)
    # Squaring the fresh difference in place saves one full-size temporary.
    return (images - targets).square_().flatten(-3).sum(-1)


def mean_squared_error(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared pixel error over ``(C, H, W)``; leading dimensions broadcast."""
    return squared_error(images, targets) / math.prod(images.shape[-3:])


def _check_compared(images: torch.Tensor, targets: torch.Tensor) -> None:
    """Images and targets that can be compared: tensors whose image shapes ``(C, H, W)`` agree and
    whose leading dimensions broadcast (shapes only: nothing is read back from the device)."""
    for name, value in (("images", images), ("targets", targets)):
        if not isinstance(value, torch.Tensor) or value.dim() < 3:
            found = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a tensor of images (..., C, H, W), got {found}")
    try:
        torch.broadcast_shapes(images.shape, targets.shape)
    except RuntimeError:
        raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)} cannot be compared: their "
                         "image shapes must agree and their leading dimensions broadcast") from None


def _as_tiling(images: torch.Tensor, targets: torch.Tensor):
    """``(canvases (L * M, C, H, W), targets (M, C, H, W), batch shape)`` when one operand
    only broadcasts over leading dimensions of the other, else ``None``. The squared error
    is symmetric, so either may be the larger."""
    if images.dim() < 3 or targets.dim() < 3 or images.shape[-3:] != targets.shape[-3:]:
        return None
    large, small = (images, targets) if images.dim() >= targets.dim() else (targets, images)
    if large.shape[large.dim() - small.dim():] != small.shape or large.numel() == 0:
        return None
    event = small.shape[-3:]
    return large.reshape(-1, *event), small.reshape(-1, *event), large.shape[:-3]


def _fuse(tiling, compile: bool | None) -> bool:
    canvases, targets, _ = tiling
    if canvases.dtype != targets.dtype or not canvases.is_floating_point() or canvases.device != targets.device:
        return False
    if torch.is_grad_enabled() and (canvases.requires_grad or targets.requires_grad):
        return False  # the fused kernel is for scoring; gradients take the eager path
    if compile is not None:
        return compile
    return canvases.numel() >= FUSE_FROM_PIXELS and compile_allowed()
