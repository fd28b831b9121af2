"""Budgets of renders: how many canvases an engine may look at per target image.

What one render is, and where renders are counted, is the rule of the program's render
meter (:mod:`spiral_ppl.programs.meter`): each whole program rendered and each intermediate
canvas read is one render. A budget is *per target image*, so engines that work on a batch
of ``B`` targets at once may render ``B * renders`` canvases in all;
:meth:`~spiral_ppl.inference.Engine.infer` measures what they spent with the meter.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiral_ppl.checks import positive_int


@dataclass(frozen=True)
class Budget:
    """How many renders an engine may spend on each target image.

    :param renders: renders per target: one whole program, or one intermediate canvas, is
        one render.

    Example::

        >>> import spiral_ppl as sp
        >>> sp.Budget(renders=1000)
        Budget(renders=1000)
    """

    renders: int

    def __post_init__(self) -> None:
        positive_int("Budget.renders", self.renders, hint="renders per target")

    @staticmethod
    def check(budget: object) -> "Budget":
        if isinstance(budget, Budget):
            return budget
        raise TypeError(f"budget must be a spiral_ppl.Budget, e.g. sp.Budget(renders=1000), got {budget!r}")
