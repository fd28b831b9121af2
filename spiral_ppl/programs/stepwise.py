r"""The step-wise protocol: programs grown one action at a time.

Engines that look at partial programs (SMC's particles, a SPIRAL rollout, a DAgger expert)
do not render whole programs: they keep a *state* per program and extend it by one action
:math:`a_t` at a time, reading the canvas :math:`c_t` of the first :math:`t` actions when
they need it. Every program hands them one object for this, ``prog.stepwise``, a
:class:`Stepwise` with a small contract:

=====================================================  =============================================
``initial(batch_size, device=None) -> state``          ``batch_size`` empty programs
``advance(state, action, rows=None) -> state``         one more action ``{name: LongTensor[R]}``
``canvas(state) -> images``                            the canvases ``(R, C, H, W)``; one render each
``advance_and_compare(state, action, targets, rows)``  ``advance``, and the squared errors if painted
``index(state, rows) -> state``                        the batch items ``rows`` (to resample)
=====================================================  =============================================

States are opaque to engines. ``rows``, where given, are the batch items of ``state`` to
advance (the particles a particle method resampled), as ``advance(index(state, rows),
action)`` but without copying the states first where the program can avoid it. Only
:meth:`Stepwise.canvas` costs renders, charged to ``prog.meter`` (the rule is in
:mod:`spiral_ppl.programs.meter`); advancing is free.

Two implementations come with the package:

- :class:`PrefixStepwise`, the default of every :class:`~spiral_ppl.programs.Program`: the
  state is the prefix of actions and a canvas re-draws it, which is right for any grammar;
- :class:`RendererStepwise`, that of a :class:`~spiral_ppl.programs.RendererProgram`: the
  renderer's own state (a brush's canvas and position), so a canvas costs one stroke.

A step-wise object declares what it can do as attributes, which engines read instead of
probing: :attr:`Stepwise.compares_while_painting` says whether
:meth:`~Stepwise.advance_and_compare` returns the squared pixel errors of the new canvases
(computed while painting, without reading the canvases again), or ``None``.

Example::

    >>> import torch, spiral_ppl as sp
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=2)
    >>> actions = {c.name: torch.randint(0, c.size, (3, 2)) for c in prog.action_space}
    >>> stepwise = prog.stepwise
    >>> state = stepwise.initial(3)
    >>> for t in range(2):
    ...     state = stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
    >>> torch.equal(stepwise.canvas(state), prog.render(actions)), prog.renders  # 3 canvases + 3 programs
    (True, 6)
    >>> stepwise  # the brush's own states; it scores its canvases as it paints them
    RendererStepwise(PaintProgram(Brush(...), steps=2))
    >>> stepwise.compares_while_painting
    True
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Mapping

import torch

from spiral_ppl.renderers.base import Renderer, UnindexableState, index_batch

if TYPE_CHECKING:
    from spiral_ppl.programs.base import Program


class Stepwise(abc.ABC):
    """The step-wise protocol of one program (base class; see the module docstring).

    :param program: the program whose canvases this object draws and charges.

    An implementation provides :meth:`initial`, :meth:`_step` and :meth:`_draw` (the
    uncounted primitives), and may override :meth:`index` for states that are not trees of
    batch-first tensors, and :meth:`advance_and_compare` (setting
    :attr:`compares_while_painting`) when it can score canvases while painting them.
    """

    #: Whether :meth:`advance_and_compare` returns the squared errors of the new canvases
    #: (``True``) or ``None`` for them (``False``; the caller scores the canvases it reads).
    compares_while_painting: bool = False

    def __init__(self, program: "Program") -> None:
        self.program = program

    # -- what an implementation provides (uncounted) ----------------------------------------

    @abc.abstractmethod
    def initial(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The state of ``batch_size`` empty programs."""

    @abc.abstractmethod
    def _step(self, state: Any, action: Mapping[str, torch.Tensor]) -> Any:
        """The state after one more action ``{name: LongTensor[R]}`` of every item of ``state``."""

    @abc.abstractmethod
    def _draw(self, state: Any) -> torch.Tensor:
        """The images ``(R, C, H, W)`` of a state, uncounted (:meth:`canvas` charges them)."""

    # -- what engines call ------------------------------------------------------------------

    def advance(self, state: Any, action: Mapping[str, torch.Tensor], rows: torch.Tensor | None = None) -> Any:
        """The state after one more action ``{name: LongTensor[R]}``; free (no render).

        :param rows: if given, ``(R,)`` batch items of ``state`` to advance, as
            ``advance(index(state, rows), action)``.
        """
        if rows is not None:
            state = self.index(state, rows)
        return self._step(state, action)

    def canvas(self, state: Any) -> torch.Tensor:
        """The canvases ``(R, C, H, W)`` of a state; each is one render, charged to ``program.meter``."""
        images = self._draw(state)
        self.program.meter.charge(images.shape[0])
        return images

    def advance_and_compare(
        self,
        state: Any,
        action: Mapping[str, torch.Tensor],
        targets: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor | None]:
        """:meth:`advance`, and the squared pixel error of each new canvas against its target
        where :attr:`compares_while_painting`; free, like :meth:`advance`.

        :param targets: ``(M, C, H, W)``, ``M`` dividing ``R``: canvas ``r`` is compared with
            target ``r % M`` (:func:`~spiral_ppl.squared_error.tiled_squared_error`).

        Returns the new state and the errors ``(R,)``, or ``None`` for the errors (the
        default): the caller then scores the canvases it reads with :meth:`canvas`.
        """
        return self.advance(state, action, rows), None

    def index(self, state: Any, rows: torch.Tensor) -> Any:
        """The states of the batch items ``rows`` (a LongTensor into the batch); free.

        The default handles any state that is a tensor or a (named) tuple, list or dict of
        them with the batch first, which covers the prefix states of :class:`PrefixStepwise`
        and the states of the built-in renderers.
        """
        try:
            return index_batch(state, rows)
        except UnindexableState as error:
            raise TypeError(
                f"{type(self).__name__}.index {error}; override index for this program's states"
            ) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.program!r})"


class PrefixStepwise(Stepwise):
    """The default protocol of any program: the state is the prefix of actions drawn so far,
    ``{name: LongTensor[R, t]}``, and a canvas re-draws it with
    :meth:`Program.draw <spiral_ppl.programs.Program.draw>` (the empty prefix is the
    program's :meth:`~spiral_ppl.programs.Program.blank_canvas`)."""

    def initial(self, batch_size: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        device = torch.device(device or "cpu")
        return {
            c.name: torch.zeros(batch_size, 0, dtype=torch.long, device=device) for c in self.program.action_space
        }

    def _step(self, state: Mapping[str, torch.Tensor], action: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: torch.cat([prefix, action[name][:, None]], dim=1) for name, prefix in state.items()}

    def _draw(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.program._draw_any(state)


class RendererStepwise(Stepwise):
    """The protocol of a program whose every step is one action of ``renderer``: the
    renderer's own state, advanced by :meth:`Renderer.step <spiral_ppl.renderers.Renderer.step>`
    and drawn by :meth:`Renderer.canvas <spiral_ppl.renderers.Renderer.canvas>`.

    :attr:`compares_while_painting` is the renderer's own declaration
    (:attr:`Renderer.compares_while_painting <spiral_ppl.renderers.Renderer.compares_while_painting>`:
    the brush fuses painting, gathering the resampled rows and scoring in one kernel). Otherwise
    :meth:`advance_and_compare` only advances, so that a canvas is not drawn twice.
    """

    def __init__(self, program: "Program", renderer: Renderer) -> None:
        super().__init__(program)
        self.renderer = renderer
        self.compares_while_painting = renderer.compares_while_painting

    def initial(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        return self.renderer.initial_state(batch_size, device=device)

    def _step(self, state: Any, action: Mapping[str, torch.Tensor]) -> Any:
        return self.renderer.step(state, action)

    def _draw(self, state: Any) -> torch.Tensor:
        return self.renderer.canvas(state)

    def advance_and_compare(
        self,
        state: Any,
        action: Mapping[str, torch.Tensor],
        targets: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor | None]:
        if self.compares_while_painting:
            return self.renderer.step_and_compare(state, action, targets, rows)
        return super().advance_and_compare(state, action, targets, rows)
