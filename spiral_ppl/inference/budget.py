"""Budgets of renderer calls, and the meter that checks an engine spends exactly its budget.

Renderer calls are counted in one place, :meth:`spiral_ppl.programs.Program.render` and
:meth:`~spiral_ppl.programs.Program.canvas`: each program or intermediate canvas rendered
is one render. A budget is *per target image*, so engines that work on a batch of ``B``
targets at once may render ``B * renders`` canvases in all.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiral_ppl.programs.base import Program


@dataclass(frozen=True)
class Budget:
    """How many renders an engine may spend on each target image.

    :param renders: renderer calls per target: one full program, or one intermediate canvas,
        is one render.

    Example::

        >>> import spiral_ppl as sp
        >>> sp.Budget(renders=1000)
        Budget(renders=1000)
    """

    renders: int

    def __post_init__(self) -> None:
        if isinstance(self.renders, bool) or not isinstance(self.renders, int) or self.renders < 1:
            raise ValueError(f"Budget.renders must be a positive int (renders per target), got {self.renders!r}")

    @staticmethod
    def check(budget: object) -> "Budget":
        if isinstance(budget, Budget):
            return budget
        raise TypeError(f"budget must be a spiral_ppl.Budget, e.g. sp.Budget(renders=1000), got {budget!r}")


class RenderMeter:
    """Counts the renders a program spends inside a ``with`` block, per target.

    Example::

        with RenderMeter(prog, targets=images.shape[0]) as meter:
            ...
        meter.per_target  # renders spent on each target
    """

    def __init__(self, program: Program, targets: int) -> None:
        self.program = program
        self.targets = targets
        self._start = 0
        self._end: int | None = None

    def __enter__(self) -> "RenderMeter":
        self._start = self.program.renders
        return self

    def __exit__(self, *exc_info) -> None:
        self._end = self.program.renders

    @property
    def spent(self) -> int:
        """All renders spent so far, over every target."""
        end = self.program.renders if self._end is None else self._end
        return end - self._start

    @property
    def per_target(self) -> int:
        spent = self.spent
        if spent % self.targets:
            raise RuntimeError(f"{spent} renders do not split evenly over {self.targets} targets")
        return spent // self.targets
