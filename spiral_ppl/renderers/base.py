"""The renderer contract: discrete actions in, images out.

A renderer is a pure image maker. It knows nothing of Pyro, of priors or of inference: it
declares an *action space* (an ordered tuple of :class:`Component`) and turns integer
actions into images, either a whole program at once (:meth:`Renderer.render`) or one step
at a time (:meth:`Renderer.initial_state`, :meth:`Renderer.step`, :meth:`Renderer.canvas`).
These are uncounted primitives: engines never call them, but go through a program
(:class:`~spiral_ppl.programs.RendererProgram`), whose ``render`` and step-wise protocol
``stepwise`` are built on them and charge the renders (:mod:`spiral_ppl.programs.meter`).

Conventions shared by every renderer:

- an action is a mapping ``{component name: LongTensor}``; a whole program has shape
  ``(B, T)`` per component, a single step ``(B,)``;
- a location component is a flat index ``y * grid_size + x`` into a square grid;
- images are float tensors ``(B, C, H, W)`` with values in ``[0, 1]``.

Example::

    >>> import torch, spiral_ppl as sp
    >>> brush = sp.renderers.Brush(canvas_size=64, grid_size=32)
    >>> [c.name for c in brush.action_space]
    ['flag', 'end_point', 'control_point', 'brush_size', 'pressure']
    >>> actions = {c.name: torch.zeros(2, 3, dtype=torch.long) for c in brush.action_space}
    >>> brush.render(actions).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch

from spiral_ppl import checks
from spiral_ppl.checks import positive_int
from spiral_ppl.squared_error import tiled_squared_error

ComponentKind = Literal["scalar", "location"]


@dataclass(frozen=True)
class Component:
    """One discrete decision of an action.

    :param name: the component's name; program sites are called ``step_{t}/{name}``.
    :param size: its cardinality: valid values are ``0 .. size - 1``.
    :param kind: ``"scalar"`` for an ordinary categorical choice, ``"location"`` for a flat
        index ``y * grid_size + x`` into a square grid of ``size`` cells. The SPIRAL policy
        decodes locations with a convolutional head and scalars with a linear one.
    :param ordered: whether neighbouring values of a scalar are alike (a size, a pressure, a
        colour level), so that search can try the next value up or down (local moves).
    """

    name: str
    size: int
    kind: ComponentKind = "scalar"
    ordered: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"a component name must be a non-empty string without '/', got {self.name!r}")
        positive_int(f"component {self.name!r}: size", self.size)
        if self.kind not in ("scalar", "location"):
            raise ValueError(f"component {self.name!r}: kind must be 'scalar' or 'location', got {self.kind!r}")
        if not isinstance(self.ordered, bool):
            raise TypeError(f"component {self.name!r}: ordered must be True or False, got {self.ordered!r}")
        if self.kind == "location" and math.isqrt(self.size) ** 2 != self.size:
            raise ValueError(
                f"location component {self.name!r} must have a square size (grid_size ** 2), got {self.size}"
            )

    @property
    def grid_size(self) -> int:
        """Side of the square grid of a location component."""
        if self.kind != "location":
            raise AttributeError(f"component {self.name!r} is a scalar and has no grid")
        return math.isqrt(self.size)


def validate_actions(
    action_space: tuple[Component, ...],
    actions: Mapping[str, Any],
    *,
    ndim: int | None = None,
) -> torch.Size:
    """Check an action mapping against an action space and return its common shape.

    Raises :class:`TypeError` for non-integer tensors and :class:`ValueError` for unknown or
    missing names, mismatched shapes and out-of-range values, each saying what was expected.

    :param ndim: if given, the number of dimensions every component must have
        (2 for a whole program ``(B, T)``, 1 for a single step ``(B,)``).
    """
    if not isinstance(actions, Mapping):
        raise TypeError(f"actions must be a mapping {{component name: LongTensor}}, got {type(actions).__name__}")
    expected = [c.name for c in action_space]
    unknown = sorted(set(actions) - set(expected))
    missing = [name for name in expected if name not in actions]
    if unknown or missing:
        raise ValueError(
            f"actions must have exactly the components {expected}; "
            + (f"unknown: {unknown}. " if unknown else "")
            + (f"missing: {missing}." if missing else "")
        )
    shape = None
    for component in action_space:
        value = actions[component.name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"action {component.name!r} must be a torch.LongTensor, got {type(value).__name__}; "
                "wrap it with torch.as_tensor(..., dtype=torch.long)"
            )
        if value.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"action {component.name!r} must have an integer dtype (torch.long), got {value.dtype}")
        if ndim is not None and value.dim() != ndim:
            layout = "(batch, steps)" if ndim == 2 else "(batch,)"
            raise ValueError(
                f"action {component.name!r} must have {ndim} dimensions {layout}, got shape {tuple(value.shape)}"
            )
        if shape is None:
            shape = value.shape
        elif value.shape != shape:
            raise ValueError(
                f"all action components must have the same shape; {component.name!r} has {tuple(value.shape)}, "
                f"{action_space[0].name!r} has {tuple(shape)}"
            )
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= component.size):
            raise ValueError(
                f"action {component.name!r} must lie in [0, {component.size - 1}], "
                f"got values in [{int(value.min())}, {int(value.max())}]"
            )
    assert shape is not None
    if len(shape) and shape[0] == 0:
        raise ValueError("actions describe an empty batch; give at least one program")
    return shape


def check_new_states(batch_size: Any, device: Any, bytes_per_item: int) -> torch.device:
    """The device of ``batch_size`` new states of ``bytes_per_item`` bytes each (a renderer's
    ``initial_state``), once the count, the device and the memory they need are checked."""
    positive_int("batch_size", batch_size)
    device = checks.device("device", device) or torch.device("cpu")
    checks.fits_in_memory(f"a batch of {batch_size:,} canvases of {bytes_per_item:,} bytes each",
                          batch_size * bytes_per_item,
                          remedy="render fewer programs at a time (or a smaller canvas)", where=device)
    return device


def check_state(state: Any, kind: type) -> Any:
    """``state`` if it is a ``kind``, as a renderer's ``initial_state`` and ``step`` return them."""
    if not isinstance(state, kind):
        raise TypeError(f"state must be a {kind.__name__}, as initial_state(batch_size) or a previous step returns "
                        f"it, got {type(state).__name__}")
    return state


class UnindexableState(TypeError):
    """Raised by :func:`index_batch` for a state that is not a tree of batch-first tensors."""


def index_batch(state: Any, index: torch.Tensor) -> Any:
    """The batch items ``index`` (a LongTensor into the batch) of a state.

    Handles any state that is a tensor or a (named) tuple, list or dict of them with the batch
    first, as the default prefix state of programs and the states of the built-in renderers
    are; raises :class:`UnindexableState` otherwise.
    """
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, Mapping):
        return type(state)({key: index_batch(value, index) for key, value in state.items()})
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(index_batch(value, index) for value in state))
    if isinstance(state, (tuple, list)):
        return type(state)(index_batch(value, index) for value in state)
    raise UnindexableState(f"cannot index a state of type {type(state).__name__}")


class Renderer(abc.ABC):
    """Base class of every renderer.

    Subclasses set :attr:`action_space`, :attr:`channels` and :attr:`image_size`, and
    implement :meth:`initial_state`, :meth:`step` and :meth:`canvas`; :meth:`render` is
    derived from them. A renderer that can score its canvases against targets while it paints
    overrides :meth:`step_and_compare` and declares it in :attr:`compares_while_painting`.
    """

    #: Whether :meth:`step_and_compare` is this renderer's own, scoring canvases while it paints
    #: them; a program's step-wise protocol then uses it (otherwise it only steps, and the
    #: caller scores the canvases it reads, so that none is drawn twice).
    compares_while_painting: bool = False

    #: The ordered components of one action.
    action_space: tuple[Component, ...]
    #: Number of image channels (1 for grayscale, 3 for RGB).
    channels: int
    #: Height and width of the square images, in pixels.
    image_size: int

    @abc.abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The state of ``batch_size`` empty canvases (or scenes)."""

    @abc.abstractmethod
    def step(self, state: Any, action: Mapping[str, torch.Tensor]) -> Any:
        """Apply one action ``{name: LongTensor[B]}`` to every item of the batch."""

    @abc.abstractmethod
    def canvas(self, state: Any) -> torch.Tensor:
        """The images ``(B, C, H, W)`` of a state."""

    def step_and_compare(
        self,
        state: Any,
        action: Mapping[str, torch.Tensor],
        targets: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor]:
        """One action, and the squared pixel error of each new canvas against its target.

        :param state: a state of ``R`` canvases, or any state if ``rows`` is given.
        :param action: ``{name: LongTensor[R]}``.
        :param targets: ``(M, C, H, W)`` images, ``M`` dividing ``R``: canvas ``r`` is compared
            with target ``r % M`` (:func:`~spiral_ppl.squared_error.tiled_squared_error`).
        :param rows: if given, ``(R,)`` batch items of ``state`` to apply the action to (the
            particles a particle method resampled), as ``step(index_batch(state, rows), action)``.

        Returns the new state and the errors ``(R,)``. The default steps, then draws the
        canvases and compares; a renderer that can gather the rows and compare while it paints
        overrides it, so that a particle method neither copies resampled states nor reads
        every canvas twice. Only an override is used by the engines: without one, the
        program's step-wise protocol advances and lets the engine score the canvas it reads.
        """
        if rows is not None:
            state = index_batch(state, rows)
        state = self.step(state, action)
        canvas = self.canvas(state)
        self.check_targets(targets, canvas.shape[0])
        return state, tiled_squared_error(canvas, targets.to(canvas.device))

    def check_targets(self, targets: torch.Tensor, canvases: int) -> None:
        """Targets ``(M, C, H, W)`` of this renderer's images, ``M`` dividing the number of
        ``canvases`` compared with them (shapes only: no device synchronisation)."""
        expected = (self.channels, self.image_size, self.image_size)
        if not isinstance(targets, torch.Tensor) or targets.dim() != 4 or tuple(targets.shape[1:]) != expected:
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets must have shape (M, {', '.join(map(str, expected))}), got {shape}")
        if not targets.is_floating_point():  # the dtype, unlike the values, is known without a device sync
            raise TypeError(f"targets must be float images in [0, 1], got dtype {targets.dtype}; "
                            "for uint8 pixels use targets.float() / 255")
        if canvases % targets.shape[0]:
            raise ValueError(f"{canvases} canvases cannot be tiled over {targets.shape[0]} targets: "
                             "canvas r is compared with target r % M, so M must divide the canvases")

    @property
    def component_names(self) -> list[str]:
        return [component.name for component in self.action_space]

    def render(self, actions: Mapping[str, torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
        """Render whole programs: ``{name: LongTensor[B, T]}`` -> images ``(B, C, H, W)``.

        The loop runs over the ``T`` steps of the program; each step is batched.
        """
        shape = validate_actions(self.action_space, actions, ndim=2)
        batch_size, steps = shape
        device = checks.device("device", device)
        if device is None:
            device = next(iter(actions.values())).device
        state = self.initial_state(batch_size, device=device)
        for t in range(steps):
            state = self.step(state, {name: value[:, t] for name, value in actions.items()})
        return self.canvas(state)

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}:{c.size}" for c in self.action_space)
        return f"{type(self).__name__}(image_size={self.image_size}, channels={self.channels}, actions=[{parts}])"
