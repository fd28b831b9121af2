"""Optional :func:`torch.compile` of the library's per-pixel kernels, with an eager fallback.

Two kernels touch every pixel of every canvas an engine handles: the brush stroke
(:mod:`spiral_ppl.renderers.brush`) and the squared pixel error behind the likelihood
(:mod:`spiral_ppl.squared_error`). Eager torch runs each as a chain of
elementwise operations, each writing a full-size temporary; compiled, each becomes one
pass over the pixels. Compiling costs seconds the first time, so callers only use the
compiled kernel for calls large enough to pay that back.

The environment variable ``SPIRAL_PPL_COMPILE=0`` (or ``false``, ``no``, ``off``) keeps
every automatic choice eager, e.g. in unit tests; an explicit request to compile is honoured.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch


def compile_allowed() -> bool:
    """Whether automatic compilation is allowed by ``SPIRAL_PPL_COMPILE``."""
    setting = os.environ.get("SPIRAL_PPL_COMPILE", "").strip().lower()
    return setting not in ("0", "false", "no", "off")


class CompiledWithFallback:
    """``torch.compile(function)`` that drops back to ``function`` (once, with a warning) if it fails.

    Compiling needs a C++ compiler on CPU and Triton on CUDA; a user without them still gets
    correct (slower) results. Shapes are compiled dynamically, so batches of every size
    share one compiled kernel.
    """

    def __init__(self, function: Callable, name: str) -> None:
        self.function = function
        self.name = name
        self.compiled = torch.compile(function, dynamic=True)
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means "use eager"
                self.failed = True
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); the {self.name} falls back to eager "
                    "mode, which is correct but slower. Set SPIRAL_PPL_COMPILE=0 to skip compiling.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.function(*args)
