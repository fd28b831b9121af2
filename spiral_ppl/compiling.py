"""Optional :func:`torch.compile` of the library's per-pixel kernels, with an eager fallback.

Two kernels touch every pixel of every canvas an engine handles: the brush stroke
(:mod:`spiral_ppl.renderers.brush`) and the squared pixel error behind the likelihood
(:mod:`spiral_ppl.squared_error`). Eager torch runs each as a chain of
elementwise operations, each writing a full-size temporary; compiled, each becomes one
pass over the pixels. Compiling costs seconds the first time, so callers only use the
compiled kernel for calls large enough to pay that back.

The environment variable ``SPIRAL_PPL_COMPILE=0`` (or ``false``, ``no``, ``off``) keeps
every automatic choice eager, e.g. in unit tests; an explicit request to compile is honoured.

Compiling is a one-off cost of the process, not of the engine that happens to meet it first:
the first ``torch.compile`` (which imports the compiler) and every call during which torch
compiled or recompiled a kernel (a first call, or a new kind of input: another dtype, device
or rank, a size of 0 or 1) are timed and added to
:func:`compile_seconds`, which :meth:`Engine.infer <spiral_ppl.inference.Engine.infer>`
subtracts from an engine's ``seconds`` and reports apart.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable

import torch

_compile_seconds = 0.0


def compile_seconds() -> float:
    """Seconds this process has spent in first calls of compiled kernels (compiling them)."""
    return _compile_seconds


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
        # The first torch.compile of a process imports the compiler, seconds of it: compile time too.
        started = time.perf_counter()
        self.compiled = torch.compile(function, dynamic=True)
        _add_compile_time(time.perf_counter() - started)
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            frames, started = _frames_compiled(), time.perf_counter()
            try:
                result = self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means "use eager"
                self.failed = True
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); the {self.name} falls back to eager "
                    "mode, which is correct but slower. Set SPIRAL_PPL_COMPILE=0 to skip compiling.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            else:
                if _frames_compiled() != frames:  # this call compiled (or recompiled) the kernel
                    _add_compile_time(time.perf_counter() - started)
                return result
        return self.function(*args)


def _add_compile_time(seconds: float) -> None:
    global _compile_seconds
    _compile_seconds += seconds


def _frames_compiled() -> int:
    """How many frames torch's compiler has compiled in this process (every compile and recompile)."""
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]
