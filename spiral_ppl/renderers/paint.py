r"""The paper's paint action space, shared by every paint engine.

A paint action is a tuple of discrete decisions (Ganin et al. 2018, section 4): a ``flag``
(1 paints a stroke, 0 jumps without ink), an ``end_point`` and a ``control_point`` on a
``grid_size x grid_size`` grid (flat indices ``y * grid_size + x``), a ``brush_size``, a
``pressure`` and, for colour canvases, ``red``, ``green``, ``blue`` bins. The stroke is the
quadratic Bezier curve from the current brush position :math:`l_t` through the control point
:math:`p_c` to the end point :math:`l_{t+1}`:

.. math::

    p(\tau) = (1 - \tau)^2 l_t + 2 (1 - \tau) \tau p_c + \tau^2 l_{t+1}, \quad \tau \in [0, 1].

:class:`PaintRenderer` fixes what these decisions *mean*, so that every engine behind it (the
torch :class:`~spiral_ppl.renderers.Brush`, the libmypaint
:class:`~spiral_ppl.renderers.MyPaint`) reads the same program the same way:

- grid point ``(x, y)`` sits at pixel coordinates ``(x, y) * (canvas_size - 1) / (grid_size - 1)``,
  pixel centres being at integer coordinates, so the grid's corners are the canvas's corner
  pixels at every resolution and a program re-rendered on a larger canvas gives the same
  picture, sharper (the paper's Figure 6c);
- the brush starts at grid point 0, the upper-left corner;
- size index ``k`` is a stroke ``sizes[k] * width_scale`` pixels wide on a 64-pixel canvas,
  scaled with ``canvas_size``; its radius is half that;
- pressure level ``k`` is the pressure ``(k + 1) / pressure_levels`` in ``(0, 1]``;
- colour bin ``k`` is the intensity ``k / (color_bins - 1)``; grayscale canvases have ink 1
  on a background 0 (MNIST's convention).

Example::

    >>> import torch, spiral_ppl as sp
    >>> brush = sp.renderers.Brush(canvas_size=64, grid_size=32, width_scale=1.0)
    >>> brush.grid_to_pixels(torch.tensor([0, 31, 32 * 32 - 1])).tolist()
    [[0.0, 0.0], [63.0, 0.0], [63.0, 63.0]]
    >>> brush.stroke_radius(torch.tensor([0, 5])).tolist()  # sizes 1 and 24 at 64x64
    [0.5, 12.0]
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import torch

from spiral_ppl import checks
from spiral_ppl.checks import positive_int
from spiral_ppl.renderers.base import Component, Renderer, validate_actions

#: Brush sizes of the reference agents (the ``brush_size`` action picks one of them).
DEFAULT_SIZES = (1, 2, 4, 8, 12, 24)

#: The colour components, in the order the policy samples them.
COLOR_COMPONENTS = ("red", "green", "blue")


class PaintRenderer(Renderer):
    """Base class of paint engines: the paint action space and what its values mean.

    :param canvas_size: side of the square canvas in pixels (64 in the paper).
    :param grid_size: side of the location grid of end and control points (32).
    :param color: add ``red``, ``green``, ``blue`` components (``color_bins`` each) and
        paint on 3 channels; otherwise ink is 1 on a 0 background on 1 channel.
    :param sizes: brush sizes the ``brush_size`` component chooses from, in pixels of
        stroke width at a 64-pixel canvas (scaled with ``canvas_size``).
    :param pressure_levels: number of pressure levels; level ``k`` is pressure
        ``(k + 1) / pressure_levels``.
    :param color_bins: bins per colour channel; bin ``k`` is intensity ``k / (bins - 1)``.
    :param background: canvas value before any stroke (a float, or one per channel).
    :param width_scale: a stroke of size ``s`` is ``width_scale * s`` pixels wide at 64x64.

    Subclasses implement the step-wise protocol and list their own constructor arguments in
    :meth:`settings`, which :meth:`with_canvas_size` uses to build the same engine at another
    resolution.
    """

    def __init__(
        self,
        canvas_size: int = 64,
        grid_size: int = 32,
        color: bool = False,
        sizes: Sequence[float] = DEFAULT_SIZES,
        pressure_levels: int = 10,
        color_bins: int = 20,
        background: float | Sequence[float] = 0.0,
        width_scale: float = 1.0,
    ) -> None:
        if not isinstance(canvas_size, int) or canvas_size < 2:
            raise ValueError(f"canvas_size must be an int >= 2, got {canvas_size!r}")
        if not isinstance(grid_size, int) or not 2 <= grid_size <= canvas_size:
            raise ValueError(f"grid_size must be an int in [2, canvas_size={canvas_size}], got {grid_size!r}")
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__") or not all(
                isinstance(size, numbers.Real) and not isinstance(size, bool) for size in sizes):
            raise ValueError(f"sizes must be a non-empty list of positive numbers (brush widths in pixels), "
                             f"got {sizes!r}")
        sizes = tuple(float(s) for s in sizes)
        if not sizes or any(not math.isfinite(s) or s <= 0 for s in sizes):
            raise ValueError(f"sizes must be a non-empty list of positive numbers, got {sizes!r}")
        positive_int("pressure_levels", pressure_levels)
        if not isinstance(color_bins, int) or color_bins < 2:
            raise ValueError(f"color_bins must be an int >= 2, got {color_bins!r}")
        checks.positive_number("width_scale", width_scale)
        self.image_size = canvas_size
        self.canvas_size = canvas_size
        self.grid_size = grid_size
        self.color = checks.switch("color", color)  # "false" from a configuration is not a colour brush
        self.channels = 3 if color else 1
        self.sizes = sizes
        self.pressure_levels = pressure_levels
        self.color_bins = color_bins
        self.width_scale = float(width_scale)
        if isinstance(background, (str, bytes)) or not isinstance(background, (numbers.Real, Sequence, torch.Tensor)):
            raise ValueError(f"background must be one value in [0, 1] or {self.channels} of them, got {background!r}")
        background = torch.as_tensor(background, dtype=torch.float32).flatten()
        if background.numel() == 1:
            background = background.expand(self.channels)
        if background.numel() != self.channels or not bool(((background >= 0) & (background <= 1)).all()):
            raise ValueError(
                f"background must be one value in [0, 1] or {self.channels} of them, got {background.tolist()}"
            )
        self.background = background.clone()

        grid_cells = grid_size * grid_size
        components = [
            Component("flag", 2),
            Component("end_point", grid_cells, "location"),
            Component("control_point", grid_cells, "location"),
            Component("brush_size", len(sizes), ordered=True),
            Component("pressure", pressure_levels, ordered=True),
        ]
        if color:
            components += [Component(name, color_bins, ordered=True) for name in COLOR_COMPONENTS]
        self.action_space = tuple(components)

    # -- what the action values mean ---------------------------------------------------------

    @property
    def spacing(self) -> float:
        """Distance in pixels between neighbouring grid points."""
        return (self.canvas_size - 1) / (self.grid_size - 1)

    def grid_to_pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Flat grid indices ``(...)`` -> pixel coordinates ``(..., 2)`` as ``(x, y)``."""
        if not isinstance(index, torch.Tensor):
            raise TypeError(f"index must be a tensor of flat grid indices, got {type(index).__name__}; "
                            "wrap it with torch.as_tensor(..., dtype=torch.long)")
        x = index % self.grid_size
        y = torch.div(index, self.grid_size, rounding_mode="floor")
        return torch.stack([x, y], dim=-1).to(torch.float32) * self.spacing

    def stroke_radius(self, size_index: torch.Tensor) -> torch.Tensor:
        """Radius in pixels of the strokes of ``brush_size`` indices."""
        sizes = torch.tensor(self.sizes, device=size_index.device)
        return sizes[size_index] * (self.width_scale * self.canvas_size / 64.0) / 2

    def pressure(self, level: torch.Tensor) -> torch.Tensor:
        """Pressure in ``(0, 1]`` of ``pressure`` levels: ``(level + 1) / pressure_levels``."""
        return (level + 1).to(torch.float32) / self.pressure_levels

    def ink(self, action: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Ink colour ``(B, channels)`` in ``[0, 1]`` of a step's action (1 for grayscale)."""
        if self.color:
            bins = torch.stack([action[name] for name in COLOR_COMPONENTS], dim=-1)
            return bins.to(torch.float32) / (self.color_bins - 1)
        return torch.ones(action["flag"].shape[0], 1, device=action["flag"].device)

    def check_step(self, action: Mapping[str, torch.Tensor], batch_size: int) -> None:
        """Validate one step's action ``{name: LongTensor[B]}`` against a state of ``batch_size``."""
        validate_actions(self.action_space, action, ndim=1)
        if action["flag"].shape[0] != batch_size:
            raise ValueError(
                f"the action has batch {action['flag'].shape[0]} but the state holds {batch_size} canvases"
            )

    # -- resolution ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this renderer (subclasses add their own)."""
        return {
            "canvas_size": self.canvas_size,
            "grid_size": self.grid_size,
            "color": self.color,
            "sizes": self.sizes,
            "pressure_levels": self.pressure_levels,
            "color_bins": self.color_bins,
            "background": self.background.tolist(),
            "width_scale": self.width_scale,
        }

    def with_canvas_size(self, canvas_size: int) -> "PaintRenderer":
        """The same engine on a canvas of another resolution: the same programs, the same
        picture, strokes scaled with the canvas (the paper's Figure 6c)."""
        return type(self)(**{**self.settings(), "canvas_size": canvas_size})
