"""The contract every inference engine follows: ``engine.infer(prog, images, budget)``.

An engine subclasses :class:`Engine` and implements :meth:`Engine._infer`. The base class
checks the inputs at the boundary, seeds the random number generators when asked, times the
run (less the time spent compiling kernels on their first call, reported apart as
``diagnostics["compile_seconds"]``, so that ``seconds`` means the same for every engine and
budget) and measures the renders spent with the program's render meter (``prog.meter``, whose
docstring states what counts as a render), so that every engine is held to the same
accounting.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time

import pyro
import torch

from spiral_ppl import checks, compiling
from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.randomness import preserved_random_state
from spiral_ppl.inference.result import Result
from spiral_ppl.programs.base import Program, require_fixed_structure


def check_progress(progress: object) -> bool | None:
    """A ``progress`` option: ``True``, ``False``, or ``None`` (a bar only on a terminal)."""
    return checks.optional_switch("progress", progress, none="a bar only on a terminal")


def hide_progress(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` option: ``None`` shows the bar only on a terminal."""
    progress = check_progress(progress)
    return None if progress is None else not progress


class Engine(abc.ABC):
    """Base class of inference engines (importance sampling, MCMC, SMC, SPIRAL)."""

    #: Short name used in tables and plots.
    name: str = "engine"
    #: Whether the engine needs the program's steps (batched draws, per-step priors), or
    #: works from the model's addresses and so also runs programs whose structure varies.
    needs_fixed_structure: bool = True

    def infer(self, prog: Program, images: torch.Tensor, budget: Budget, *, seed: int | None = None) -> Result:
        """Reconstruct each target image with at most ``budget.renders`` renders per target.

        :param prog: the program to invert.
        :param images: ``(B, C, H, W)`` float targets in ``[0, 1]``.
        :param budget: renders allowed per target.
        :param seed: seed for this run; the global random state is left as it was.
        """
        if not isinstance(prog, Program):
            raise TypeError(f"prog must be a spiral_ppl.programs.Program, got {type(prog).__name__}")
        if self.needs_fixed_structure:
            require_fixed_structure(prog, f"the {self.name} engine")
        images = prog.check_images(images, name="images")
        budget = Budget.check(budget)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
            raise ValueError(f"seed must be an int in [0, 2**32) or None (no seeding), got {seed!r}")
        rng = preserved_random_state() if seed is not None else contextlib.nullcontext()
        with rng, torch.no_grad():
            if seed is not None:
                pyro.set_rng_seed(seed)
            started, compiled_before = time.perf_counter(), compiling.compile_seconds()
            with prog.meter.measure(targets=images.shape[0]) as measured:
                result = self._infer(prog, images, budget)
            # Compiling a kernel is the process's one-off cost, not this engine's: reported apart.
            compile_seconds = compiling.compile_seconds() - compiled_before
            seconds = time.perf_counter() - started - compile_seconds
        spent = measured.per_target
        if spent > budget.renders:
            raise RuntimeError(f"{self.name} spent {spent} renders per target, over its budget of {budget.renders}")
        renders = torch.full((images.shape[0],), spent, dtype=torch.long)
        diagnostics = {**result.diagnostics, "compile_seconds": compile_seconds}
        return dataclasses.replace(result, renders=renders, seconds=seconds, engine=self.name, diagnostics=diagnostics)

    @abc.abstractmethod
    def _infer(self, prog: Program, images: torch.Tensor, budget: Budget) -> Result:
        """Do the work on validated inputs. ``renders`` and ``seconds`` are filled in by :meth:`infer`."""
