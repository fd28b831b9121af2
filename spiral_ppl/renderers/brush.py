r"""A batched quadratic-Bezier brush in pure torch: the fast default paint engine.

Each action paints one stroke, a quadratic Bezier curve from the current brush position
:math:`l_t` through the control point :math:`p_c` to the end point :math:`l_{t+1}`:

.. math::

    p(\tau) = (1 - \tau)^2 l_t + 2 (1 - \tau) \tau p_c + \tau^2 l_{t+1}, \quad \tau \in [0, 1].

Rather than stamping dabs along the curve, every pixel is given its exact distance to the
curve, found in closed form: the nearest curve parameter of a point :math:`q` is a root of
the cubic :math:`\frac{d}{d\tau} \|p(\tau) - q\|^2 = 0`, solved with Cardano's formula (one
real root) or the trigonometric method (three real roots). A stroke of radius :math:`r`
covers a pixel at distance :math:`d` with the anti-aliased coverage
:math:`\mathrm{clip}(r + \tfrac12 - d, 0, 1)` and is composited over the canvas with opacity
``pressure`` (0.1 .. 1.0): :math:`c \leftarrow c + \alpha (k - c)` for ink colour :math:`k`.
A jump (``flag = 0``) moves the brush and leaves no ink. Everything is vectorised over the
batch and over the pixels: there is no loop over canvases or over points of a stroke.

The state is the canvas plus the brush position (a grid index); the brush starts at the
upper-left grid point. Grid point ``(x, y)`` sits at pixel coordinates
``(x, y) * (canvas_size - 1) / (grid_size - 1)``, pixel centres being at integer
coordinates, so the grid's corners are the canvas's corner pixels at every resolution:
re-rendering the same program with a larger ``canvas_size`` gives the same picture, sharper
(the paper's Figure 6c).

Grayscale canvases follow MNIST's convention, ink 1 on a 0 background.

Example::

    >>> import torch, spiral_ppl as sp
    >>> brush = sp.renderers.Brush(canvas_size=64, grid_size=32)
    >>> stroke = {"flag": torch.tensor([[1]]), "end_point": torch.tensor([[31 * 32 + 31]]),
    ...           "control_point": torch.tensor([[31]]), "brush_size": torch.tensor([[2]]),
    ...           "pressure": torch.tensor([[9]])}
    >>> brush.render(stroke).amax().item()  # a full-pressure stroke inks some pixels fully
    1.0

References: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018, section 4 and appendix.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Mapping, NamedTuple, Sequence

import torch

from spiral_ppl.renderers.base import Component, Renderer, validate_actions

#: Brush sizes of the reference agents (the action picks one of them).
DEFAULT_SIZES = (1, 2, 4, 8, 12, 24)
#: With ``compile=None``, calls painting at least this many pixels use the compiled kernel.
COMPILE_FROM_PIXELS = 64 * 64 * 64


class BrushState(NamedTuple):
    """The state of a batch of canvases: pixels plus where each brush rests."""

    #: ``(B, C, H, W)`` float canvas in ``[0, 1]``.
    canvas: torch.Tensor
    #: ``(B,)`` flat grid index ``y * grid_size + x`` of the brush.
    position: torch.Tensor


def _stroke_distance(start, control, end, pixel_x, pixel_y):
    """Distance from every pixel to each stroke's quadratic Bezier curve.

    ``start``, ``control``, ``end``: ``(B, 2)`` pixel coordinates; ``pixel_x``, ``pixel_y``:
    ``(P,)``. Returns ``(B, P)``.

    With ``a = control - start``, ``b = start - 2 control + end`` and ``e = start - q``, the
    curve is ``p(t) - q = e + 2 a t + b t^2`` and the stationary points of the squared
    distance solve ``|b|^2 t^3 + 3 (a.b) t^2 + (2 |a|^2 + e.b) t + e.a = 0``. Straight strokes
    (``b = 0``: the control point at the midpoint, and dots) are handled as segments.
    """
    a = control - start
    b = start - 2 * control + end
    bb = (b * b).sum(-1)
    # On a grid, b is a whole multiple of the grid spacing (at least one pixel) or zero up to
    # rounding, so the cubic is well conditioned whenever it is used; the placeholder only
    # keeps the rows of straight strokes finite.
    straight = bb < 1e-4
    b = torch.where(straight[:, None], torch.ones_like(b), b)
    bb = torch.where(straight, torch.full_like(bb, 2.0), bb)

    ex = start[:, 0:1] - pixel_x  # (B, P)
    ey = start[:, 1:2] - pixel_y
    ax, ay = a[:, 0:1], a[:, 1:2]
    bx, by = b[:, 0:1], b[:, 1:2]
    inv_bb = (1.0 / bb)[:, None]

    # Monic cubic t^3 + 3 kx t^2 + 3 ky t + kz, then depressed with t = s - kx.
    kx = inv_bb * (ax * bx + ay * by)
    ky = inv_bb * (2 * (ax * ax + ay * ay) + ex * bx + ey * by) / 3
    kz = inv_bb * (ex * ax + ey * ay)
    p = ky - kx * kx
    q = kx * (2 * kx * kx - 3 * ky) + kz
    discriminant = q * q + 4 * p * p * p

    # One real root (Cardano).
    root = torch.sqrt(discriminant.clamp_min(0))
    u = (root - q) / 2
    v = (-root - q) / 2
    t_one = (torch.sign(u) * u.abs().pow(1 / 3) + torch.sign(v) * v.abs().pow(1 / 3) - kx).clamp(0, 1)

    # Three real roots (trigonometric); the middle one is a maximum of the distance.
    z = torch.sqrt((-p).clamp_min(1e-12))
    angle = torch.acos((q / (p * z * 2).clamp(max=-1e-12)).clamp(-1, 1)) / 3
    m = torch.cos(angle)
    n = torch.sin(angle) * math.sqrt(3)
    t_left = ((m + m) * z - kx).clamp(0, 1)
    t_right = ((-n - m) * z - kx).clamp(0, 1)

    def squared_distance(t):
        dx = ex + (2 * ax + bx * t) * t
        dy = ey + (2 * ay + by * t) * t
        return dx * dx + dy * dy

    curve = torch.where(
        discriminant >= 0,
        squared_distance(t_one),
        torch.minimum(squared_distance(t_left), squared_distance(t_right)),
    )

    # Segment from start to end (also a dot when they coincide).
    sx, sy = (end - start)[:, 0:1], (end - start)[:, 1:2]
    length2 = (sx * sx + sy * sy).clamp_min(1e-12)
    t_segment = (-(ex * sx + ey * sy) / length2).clamp(0, 1)
    segment = (ex + sx * t_segment) ** 2 + (ey + sy * t_segment) ** 2

    return torch.where(straight[:, None], segment, curve).sqrt()


def _paint(canvas, start, control, end, radius, opacity, ink, pixel_x, pixel_y):
    """Composite one stroke per canvas: ``canvas + alpha * (ink - canvas)``.

    ``radius``, ``opacity``: ``(B,)`` (opacity 0 for jumps); ``ink``: ``(B, C)``.
    """
    batch, channels, height, width = canvas.shape
    distance = _stroke_distance(start, control, end, pixel_x, pixel_y)
    coverage = (radius[:, None] + 0.5 - distance).clamp(0, 1)
    alpha = (coverage * opacity[:, None]).view(batch, 1, height, width)
    return canvas + alpha * (ink.view(batch, channels, 1, 1) - canvas)


_compiled_paint = None


def _compile_allowed() -> bool:
    setting = os.environ.get("SPIRAL_PPL_COMPILE", "").strip().lower()
    return setting not in ("0", "false", "no", "off")


class Brush(Renderer):
    """The paper's paint action space on a fast, batched, pure-torch brush.

    :param canvas_size: side of the square canvas in pixels (64 in the paper).
    :param grid_size: side of the location grid of end and control points (32).
    :param color: add ``red``, ``green``, ``blue`` components (``color_bins`` each) and
        paint on 3 channels; otherwise ink is 1 on a 0 background on 1 channel.
    :param sizes: brush sizes the ``brush_size`` component chooses from, in pixels of
        stroke width at a 64-pixel canvas (scaled with ``canvas_size``).
    :param pressure_levels: number of pressure levels; level ``k`` paints with opacity
        ``(k + 1) / pressure_levels``.
    :param color_bins: bins per colour channel; bin ``k`` is intensity ``k / (bins - 1)``.
    :param background: canvas value before any stroke (a float, or one per channel).
    :param width_scale: stroke width of size ``s`` is ``width_scale * s`` pixels at 64x64.
    :param compile: fuse the per-pixel arithmetic with :func:`torch.compile` (about 8 times
        faster on CPU, more on a GPU; the first call compiles for ~20 s). ``None`` compiles
        for calls of at least :data:`COMPILE_FROM_PIXELS` pixels (64 canvases of 64x64), where
        the time pays back, unless the environment variable ``SPIRAL_PPL_COMPILE=0`` says
        otherwise (it does not override an explicit ``True``). Falls back to eager mode with a warning when compiling fails.
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
        compile: bool | None = None,
    ) -> None:
        if not isinstance(canvas_size, int) or canvas_size < 2:
            raise ValueError(f"canvas_size must be an int >= 2, got {canvas_size!r}")
        if not isinstance(grid_size, int) or not 2 <= grid_size <= canvas_size:
            raise ValueError(f"grid_size must be an int in [2, canvas_size={canvas_size}], got {grid_size!r}")
        sizes = tuple(float(s) for s in sizes)
        if not sizes or any(not math.isfinite(s) or s <= 0 for s in sizes):
            raise ValueError(f"sizes must be a non-empty list of positive numbers, got {sizes!r}")
        if not isinstance(pressure_levels, int) or pressure_levels < 1:
            raise ValueError(f"pressure_levels must be a positive int, got {pressure_levels!r}")
        if not isinstance(color_bins, int) or color_bins < 2:
            raise ValueError(f"color_bins must be an int >= 2, got {color_bins!r}")
        if width_scale <= 0 or not math.isfinite(width_scale):
            raise ValueError(f"width_scale must be a positive number, got {width_scale!r}")
        self.image_size = canvas_size
        self.canvas_size = canvas_size
        self.grid_size = grid_size
        self.color = bool(color)
        self.channels = 3 if color else 1
        self.sizes = sizes
        self.pressure_levels = pressure_levels
        self.color_bins = color_bins
        self.width_scale = float(width_scale)
        background = torch.as_tensor(background, dtype=torch.float32).flatten()
        if background.numel() == 1:
            background = background.expand(self.channels)
        if background.numel() != self.channels or not bool(((background >= 0) & (background <= 1)).all()):
            raise ValueError(
                f"background must be one value in [0, 1] or {self.channels} of them, got {background.tolist()}"
            )
        self.background = background.clone()
        self.compile = None if compile is None else bool(compile)

        grid_cells = grid_size * grid_size
        components = [
            Component("flag", 2),
            Component("end_point", grid_cells, "location"),
            Component("control_point", grid_cells, "location"),
            Component("brush_size", len(sizes)),
            Component("pressure", pressure_levels),
        ]
        if color:
            components += [Component(name, color_bins) for name in ("red", "green", "blue")]
        self.action_space = tuple(components)
        self._pixel_grids: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- geometry ---------------------------------------------------------------------------

    @property
    def spacing(self) -> float:
        """Distance in pixels between neighbouring grid points."""
        return (self.canvas_size - 1) / (self.grid_size - 1)

    def grid_to_pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Flat grid indices ``(...)`` -> pixel coordinates ``(..., 2)`` as ``(x, y)``."""
        x = index % self.grid_size
        y = torch.div(index, self.grid_size, rounding_mode="floor")
        return torch.stack([x, y], dim=-1).to(torch.float32) * self.spacing

    def stroke_radius(self, size_index: torch.Tensor) -> torch.Tensor:
        """Radius in pixels of the strokes of ``brush_size`` indices."""
        sizes = torch.tensor(self.sizes, device=size_index.device)
        return sizes[size_index] * (self.width_scale * self.canvas_size / 64.0) / 2

    def with_canvas_size(self, canvas_size: int) -> "Brush":
        """The same brush on a canvas of another resolution (strokes scale with it)."""
        return Brush(
            canvas_size=canvas_size,
            grid_size=self.grid_size,
            color=self.color,
            sizes=self.sizes,
            pressure_levels=self.pressure_levels,
            color_bins=self.color_bins,
            background=self.background.tolist(),
            width_scale=self.width_scale,
            compile=self.compile,
        )

    def _pixels(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._pixel_grids:
            coordinates = torch.arange(self.canvas_size, dtype=torch.float32, device=device)
            ys, xs = torch.meshgrid(coordinates, coordinates, indexing="ij")
            self._pixel_grids[device] = (xs.reshape(-1), ys.reshape(-1))
        return self._pixel_grids[device]

    # -- the step-wise protocol ------------------------------------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> BrushState:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        device = torch.device(device or "cpu")
        canvas = self.background.to(device).view(1, self.channels, 1, 1)
        canvas = canvas.expand(batch_size, self.channels, self.canvas_size, self.canvas_size).clone()
        return BrushState(canvas, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, state: BrushState, action: Mapping[str, torch.Tensor]) -> BrushState:
        validate_actions(self.action_space, action, ndim=1)
        canvas, position = state
        if action["flag"].shape[0] != canvas.shape[0]:
            raise ValueError(
                f"the action has batch {action['flag'].shape[0]} but the state holds {canvas.shape[0]} canvases"
            )
        device = canvas.device
        action = {name: value.to(device=device, dtype=torch.long) for name, value in action.items()}
        start = self.grid_to_pixels(position)
        control = self.grid_to_pixels(action["control_point"])
        end = self.grid_to_pixels(action["end_point"])
        radius = self.stroke_radius(action["brush_size"])
        opacity = (action["pressure"] + 1).to(torch.float32) / self.pressure_levels
        opacity = opacity * action["flag"].to(torch.float32)
        if self.color:
            ink = torch.stack([action[c] for c in ("red", "green", "blue")], dim=-1)
            ink = ink.to(torch.float32) / (self.color_bins - 1)
        else:
            ink = torch.ones(canvas.shape[0], 1, device=device)
        pixel_x, pixel_y = self._pixels(device)
        paint = self._paint_function(canvas.shape[0] * canvas.shape[-1] * canvas.shape[-2])
        canvas = paint(canvas, start, control, end, radius, opacity, ink, pixel_x, pixel_y)
        return BrushState(canvas, action["end_point"])

    def canvas(self, state: BrushState) -> torch.Tensor:
        return state.canvas

    def _paint_function(self, pixels: int):
        global _compiled_paint
        if self.compile is None:
            use_compiled = pixels >= COMPILE_FROM_PIXELS and _compile_allowed()
        else:
            use_compiled = self.compile
        if not use_compiled:
            return _paint
        if _compiled_paint is None:
            _compiled_paint = _CompiledWithFallback(_paint)
        return _compiled_paint


class _CompiledWithFallback:
    """``torch.compile(fn)`` that drops back to ``fn`` (once, with a warning) if it fails.

    Compiling needs a C++ compiler on CPU and Triton on CUDA; a user without them still gets
    correct (slower) images.
    """

    def __init__(self, function):
        self.function = function
        self.compiled = torch.compile(function, dynamic=True)
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means "use eager"
                self.failed = True
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); the brush falls back to eager "
                    "mode, which is correct but slower. Set SPIRAL_PPL_COMPILE=0 to skip compiling.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.function(*args)
