r"""The render meter: what counts as a render, and the one place renders are counted.

Budgets, curves and every engine's ``Result.renders`` are in *renders*, so all of them must
agree on what one render is. The rule:

    **A render is one canvas a program hands out.** Each program rendered whole by
    :meth:`Program.render <spiral_ppl.programs.Program.render>` and each canvas read from a
    step-wise state by :meth:`Stepwise.canvas <spiral_ppl.programs.Stepwise.canvas>` is
    charged one render to the program's meter, ``prog.meter``, whether the program is empty,
    partial or whole. Nothing else is charged: a renderer's own primitives
    (``initial_state``, ``step``, ``canvas``, ``render``), advancing step-wise states (also
    when the renderer compares with the targets while it paints), and the blank canvas of the
    empty program (:meth:`Program.blank_canvas <spiral_ppl.programs.Program.blank_canvas>`, a
    constant of the program that no action drew).

So an engine pays for what it looks at: importance sampling and MCMC one render per program
they score, SMC one per particle and step, and a SPIRAL rollout one per canvas its policy
sees. Canvases made elsewhere (Ray workers rendering with their own copies of the program)
are charged to the learner's program with :meth:`RenderMeter.charge`, so its count stays
the whole run's.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> actions = {c.name: torch.zeros(3, 2, dtype=torch.long) for c in prog.action_space}
    >>> with prog.meter.measure(targets=3) as spent:
    ...     _ = prog.render(actions)                                    # 3 programs: 3 renders
    ...     state = prog.stepwise.initial(3)
    ...     state = prog.stepwise.advance(state, {n: v[:, 0] for n, v in actions.items()})  # free
    ...     _ = prog.stepwise.canvas(state)                             # 3 canvases: 3 renders
    ...     _ = prog.blank_canvas(3)                                    # free
    >>> spent.total, spent.per_target, prog.renders == prog.meter.count
    (6, 2, True)
    >>> prog.meter.charge(4)  # e.g. canvases a remote worker drew with its copy of the program
    >>> spent.total  # the measurement ended with the block
    6
"""

from __future__ import annotations

from spiral_ppl.checks import non_negative_int, positive_int


class RenderMeter:
    """The renders a program has handed out so far (see the module docstring for the rule).

    Every program owns one, ``prog.meter``; ``prog.renders`` reads its :attr:`count`.
    """

    def __init__(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        """Renders charged since the program was made."""
        return self._count

    def charge(self, renders: int) -> None:
        """Charge ``renders`` more renders (a non-negative int).

        The program charges its own canvases. Call it for canvases made with a copy of the
        program elsewhere, e.g. the episodes of remote rollout workers, whose copies' meters
        the learner never sees: ``prog.meter.charge(sum of the workers' renders)``.
        """
        self._count += non_negative_int("renders", renders)

    def measure(self, targets: int = 1) -> "Measurement":
        """A context manager measuring the renders charged inside its block, for ``targets`` targets.

        Engines run inside one, so that every engine is held to the same accounting; see
        :class:`Measurement`.
        """
        return Measurement(self, targets)

    def __repr__(self) -> str:
        return f"RenderMeter(count={self._count})"


class Measurement:
    """The renders charged to a meter inside a ``with`` block (:meth:`RenderMeter.measure`).

    :ivar total: renders charged so far (inside the block; fixed once it ends).
    :ivar per_target: ``total`` split over the targets, which must divide it evenly.
    """

    def __init__(self, meter: RenderMeter, targets: int) -> None:
        self.meter = meter
        self.targets = positive_int("targets", targets)
        self._start = meter.count
        self._end: int | None = None

    def __enter__(self) -> "Measurement":
        self._start, self._end = self.meter.count, None
        return self

    def __exit__(self, *exc_info) -> None:
        self._end = self.meter.count

    @property
    def total(self) -> int:
        """Renders charged inside the block, over every target."""
        end = self.meter.count if self._end is None else self._end
        return end - self._start

    @property
    def per_target(self) -> int:
        """Renders charged inside the block per target."""
        total = self.total
        if total % self.targets:
            raise RuntimeError(f"{total} renders do not split evenly over {self.targets} targets")
        return total // self.targets
