r"""A batched quadratic-Bezier brush in pure torch: the fast default paint engine.

Each action paints one stroke, a quadratic Bezier curve from the current brush position
:math:`l_t` through the control point :math:`p_c` to the end point :math:`l_{t+1}`:

.. math::

    p(\tau) = (1 - \tau)^2 l_t + 2 (1 - \tau) \tau p_c + \tau^2 l_{t+1}, \quad \tau \in [0, 1].

Rather than stamping dabs along the curve, every pixel is given its exact distance to the
curve, found in closed form: the nearest curve parameter of a point :math:`q` is a root of
the cubic :math:`\frac{d}{d\tau} \|p(\tau) - q\|^2 = 0`, solved with Cardano's formula (one
real root) or the trigonometric method (three real roots). A stroke of radius :math:`r`
covers a pixel at distance :math:`d` with

.. math::

    \mathrm{coverage}(d) = \mathrm{clip}\Big(\frac{r - d}{1 + s r} + \tfrac12, 0, 1\Big),

a soft edge ``1 + s r`` pixels wide (``s`` = ``softness``; ``s = 0`` is a hard, anti-aliased
pen), and is composited over the canvas with opacity :math:`\alpha = p^{\gamma}` for pressure
:math:`p` (0.1 .. 1.0, ``gamma`` = ``opacity_exponent``): :math:`c \leftarrow c + \alpha\,
\mathrm{coverage}\,(k - c)` for ink colour :math:`k`. A jump (``flag = 0``) moves the brush
and leaves no ink. Everything is vectorised over the
batch and over the pixels: there is no loop over canvases or over points of a stroke.

On the CPU a stroke's cost follows what it covers: the canvas is cut into tiles of 8x8
pixels, a cheap test on boxes bounding pieces of the curve picks the tiles within the
stroke's reach (its radius plus half its soft edge, beyond which ink is exactly 0), and the
exact distance is computed only on those, for every (stroke, tile) pair of the batch at
once. Each pixel painted gets the arithmetic it would get if every pixel were evaluated, and
every pixel skipped would get no ink, so the picture is the same. On a GPU every pixel is
evaluated (see ``Brush._paint``).

The state is the canvas plus the brush position (a grid index); the brush starts at the
upper-left grid point. Grid point ``(x, y)`` sits at pixel coordinates
``(x, y) * (canvas_size - 1) / (grid_size - 1)``, pixel centres being at integer
coordinates, so the grid's corners are the canvas's corner pixels at every resolution:
re-rendering the same program with a larger ``canvas_size`` gives the same picture, sharper
(the paper's Figure 6c).

Grayscale canvases follow MNIST's convention, ink 1 on a 0 background.

By default the brush is a hard pen: strokes exactly ``sizes[k]`` pixels wide with opacity
``p``. ``Brush(**DRY_BRUSH_LOOK)`` (``width_scale=1.4, softness=1.5, opacity_exponent=0.6``)
looks like libmypaint's ``classic/dry_brush`` (:class:`~spiral_ppl.renderers.MyPaint`, the
paper's paint engine): fitted by least squares over random programs, it halves to thirds the
mean squared pixel difference to it (benchmarks/RESULTS.md).

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
from typing import Callable, Mapping, NamedTuple, Sequence

import torch

from spiral_ppl import checks
from spiral_ppl.compiling import CompiledWithFallback, compile_allowed
from spiral_ppl.renderers.base import check_new_states, check_state
from spiral_ppl.renderers.paint import DEFAULT_SIZES, PaintRenderer
from spiral_ppl.squared_error import tiled_squared_error

#: Brush settings fitted to libmypaint's classic/dry_brush (benchmarks/brush_vs_mypaint.py --tune).
DRY_BRUSH_LOOK = {"width_scale": 1.4, "softness": 1.5, "opacity_exponent": 0.6}

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


def _paint_every_pixel(canvas, rows, start, control, end, radius, edge, opacity, ink, pixel_x, pixel_y):
    """Composite one stroke per canvas over every pixel of the canvases ``canvas[rows]`` (all of
    them if ``rows`` is None): ``canvas + alpha * (ink - canvas)``.

    ``radius``, ``edge`` (width of the soft edge in pixels), ``opacity``: ``(B,)`` (opacity 0
    for jumps); ``ink``: ``(B, C)``; ``pixel_x``, ``pixel_y``: ``(H * W,)``. It costs the same
    whatever the stroke covers: the brush uses it below :data:`TILES_FROM_PIXELS`, and it is
    the reference that :func:`_paint_tiles` must match.
    """
    if rows is not None:
        canvas = canvas.index_select(0, rows)
    batch, channels, height, width = canvas.shape
    distance = _stroke_distance(start, control, end, pixel_x, pixel_y)
    coverage = ((radius[:, None] - distance) / edge[:, None] + 0.5).clamp(0, 1)
    alpha = (coverage * opacity[:, None]).view(batch, 1, height, width)
    return canvas + alpha * (ink.view(batch, channels, 1, 1) - canvas)


class _Tiles(NamedTuple):
    """A square canvas cut into square tiles of ``side`` pixels, as the brush paints it.

    The tiles start every ``side`` pixels; where ``side`` does not divide the canvas, the
    last row and column of tiles are moved back to end at the canvas's edge and overlap their
    neighbours. Every tile then lies inside the canvas, so a tile's pixels need no mask.
    """

    #: ``(K,)`` coordinate of the first and last pixel centre of each row (and column) of tiles.
    first: torch.Tensor
    last: torch.Tensor
    #: ``(N, side * side)`` coordinates of each tile's pixel centres, row by row.
    pixel_x: torch.Tensor
    pixel_y: torch.Tensor
    #: ``(N, side * side)`` flat index ``y * canvas_size + x`` of those pixels.
    pixel_index: torch.Tensor


def _cut_into_tiles(canvas_size: int, tile_size: int, device: torch.device) -> _Tiles:
    """The tiles of :class:`_Tiles` for a ``canvas_size`` canvas (smaller tiles on smaller canvases)."""
    side = min(tile_size, canvas_size)
    first = torch.arange(0, canvas_size, side, device=device).clamp(max=canvas_size - side)
    first_y, first_x = (grid.reshape(-1, 1) for grid in torch.meshgrid(first, first, indexing="ij"))
    local = torch.arange(side, device=device)
    local_y, local_x = (grid.reshape(1, -1) for grid in torch.meshgrid(local, local, indexing="ij"))
    x, y = first_x + local_x, first_y + local_y
    first_pixel = first.to(torch.float32)
    return _Tiles(first_pixel, first_pixel + (side - 1), x.to(torch.float32), y.to(torch.float32), y * canvas_size + x)


#: Side in pixels of the tiles the brush evaluates (see :func:`_tiles_near_strokes`).
TILE_SIZE = 8

#: Calls painting fewer pixels than this evaluate every pixel: below it, choosing the tiles
#: costs more than the pixels it saves (the two break even at about 4 canvases of 64x64 eager
#: and 8 compiled, on a 2-core CPU).
TILES_FROM_PIXELS = 4 * 64 * 64

#: Pieces each curve is cut into when bounding it by boxes in :func:`_tiles_near_strokes`.
CURVE_PIECES = 8

#: Extra reach in pixels when choosing tiles, for the rounding of the curve's boxes and of
#: the distances; a pixel further than ``radius + edge / 2`` from the curve gets no ink.
REACH_MARGIN = 0.01


def _piece_boxes(start, control, end):
    """Intervals ``(low, high)``, each ``(B, CURVE_PIECES)``, holding each piece of the curves
    along one axis; ``start``, ``control``, ``end``: ``(B,)`` coordinates on that axis."""
    a, b = control - start, start - 2 * control + end
    tau = torch.linspace(0, 1, CURVE_PIECES + 1, device=start.device)
    points = start[:, None] + (2 * a[:, None] + b[:, None] * tau) * tau  # p(tau): (B, pieces + 1)
    # The control point of the piece from tau_0 to tau_1: p(tau_0) + (tau_1 - tau_0) / 2 * p'(tau_0).
    middles = points[:, :-1] + (a[:, None] + b[:, None] * tau[:-1]) / CURVE_PIECES
    low = torch.minimum(torch.minimum(points[:, :-1], points[:, 1:]), middles)
    high = torch.maximum(torch.maximum(points[:, :-1], points[:, 1:]), middles)
    return low, high


def _tiles_near_strokes(start, control, end, radius, edge, opacity, tile_first, tile_last):
    r"""Which tiles each stroke may ink: ``(B, tiles)`` booleans, ``False`` only where it inks none.

    A pixel at distance :math:`d` from the curve is covered by
    :math:`\mathrm{clip}((r - d) / e + 1/2, 0, 1)`, which is 0 from :math:`d \ge r + e/2`
    (the reach). The curve is cut into :data:`CURVE_PIECES` pieces at equal steps of
    :math:`\tau`; each piece is itself a quadratic Bezier curve, with end points
    :math:`p(\tau_0)`, :math:`p(\tau_1)` and control point
    :math:`p(\tau_0) + \tfrac12 (\tau_1 - \tau_0) p'(\tau_0)`, so it lies inside the box of
    those three points (a Bezier curve lies in the convex hull of its control points). A tile
    can only be inked if the gap between its box of pixel centres and some piece's box is
    shorter than the reach. The test only errs towards painting a tile (whose ink is then
    exactly 0), never towards skipping ink, and costs a few operations per tile and piece
    instead of the exact distance per pixel. Jumps (opacity 0) ink no tile.

    The painted pixels match :func:`_paint_every_pixel` exactly, not just closely, because
    the distance :func:`_stroke_distance` computes is the distance to some point of the curve
    (or, for a straight stroke, of the segment standing for it, within ``|b| / 4 < 0.01`` px
    of the curve), never shorter than the true distance but for rounding, which
    :data:`REACH_MARGIN` covers: a pixel of a tile left out gets ink 0 from the reference too.

    ``start``, ``control``, ``end``: ``(B, 2)``; ``radius``, ``edge``, ``opacity``: ``(B,)``;
    ``tile_first``, ``tile_last``: ``(K,)`` coordinates of the first and last pixel centres
    of each row (and column) of the ``K x K`` tiles, numbered row by row.
    """
    squared_gaps = []
    # Axis by axis on (B,) coordinates: compiled, a trailing axis of length 2 is vectorised as
    # if it were long and ran several times slower.
    for axis in (0, 1):  # x, then y
        low, high = _piece_boxes(start[:, axis], control[:, axis], end[:, axis])
        # The gap between two intervals is whichever of these is positive (0 if they overlap).
        gap = (low[:, :, None] - tile_last).clamp_min(0) + (tile_first - high[:, :, None]).clamp_min(0)
        squared_gaps.append(gap * gap)  # (B, pieces, K)
    squared_gap_x, squared_gap_y = squared_gaps
    squared_reach = (radius + edge / 2 + REACH_MARGIN).square()[:, None, None]
    near = torch.zeros_like(squared_reach, dtype=torch.bool)
    for piece in range(CURVE_PIECES):
        squared_gap = squared_gap_y[:, piece, :, None] + squared_gap_x[:, piece, None, :]  # (B, K rows, K columns)
        near = near | (squared_gap < squared_reach)
    return near.flatten(1) & (opacity > 0)[:, None]


def _paint_tiles(canvas, rows, stroke_of, tile_of, start, control, end, radius, edge, opacity, ink, tiles):
    """The strokes of :func:`_paint_every_pixel` on the canvases ``canvas[rows]`` (all of them
    if ``rows`` is None), evaluated only on the tiles the strokes may ink.

    Stroke ``stroke_of[i]`` is evaluated on the pixels of tile ``tile_of[i]``: the pairs of
    :func:`_tiles_near_strokes`. Every other pixel has ink 0, where ``canvas + 0 * (ink -
    canvas)`` is ``canvas`` exactly, so the copy of the canvases is already right there. Each
    pixel of a pair gets the very arithmetic :func:`_paint_every_pixel` gives it; where border
    tiles overlap, both pairs write the same value.
    """
    painted = canvas.clone(memory_format=torch.contiguous_format) if rows is None else canvas.index_select(0, rows)
    channels, pixels = painted.shape[1], painted.shape[2] * painted.shape[3]
    distance = _stroke_distance(start[stroke_of], control[stroke_of], end[stroke_of],
                                tiles.pixel_x[tile_of], tiles.pixel_y[tile_of])  # (pairs, side * side)
    coverage = ((radius[stroke_of, None] - distance) / edge[stroke_of, None] + 0.5).clamp(0, 1)
    alpha = (coverage * opacity[stroke_of, None])[:, None]  # (pairs, 1, side * side)
    # Flat index of pixel j of channel c of pair i in the contiguous (B, C, H, W) canvases.
    channel = torch.arange(channels, device=canvas.device).view(1, -1, 1)
    index = (stroke_of.view(-1, 1, 1) * channels + channel) * pixels + tiles.pixel_index[tile_of][:, None]
    flat = painted.view(-1)
    under = flat[index]  # (pairs, C, side * side)
    flat[index] = under + alpha * (ink[stroke_of][:, :, None] - under)
    return painted


def _paint_tiles_and_compare(canvas, rows, targets, *stroke):
    """:func:`_paint_tiles`, and the squared error of each painted canvas against its target
    (``tiled_squared_error``). Compiled, the painted canvases are not read back to be compared."""
    painted = _paint_tiles(canvas, rows, *stroke)
    return painted, tiled_squared_error(painted, targets)


def _paint_every_pixel_and_compare(canvas, rows, targets, *stroke):
    """:func:`_paint_every_pixel` and the squared errors, as :func:`_paint_tiles_and_compare`."""
    painted = _paint_every_pixel(canvas, rows, *stroke)
    return painted, tiled_squared_error(painted, targets)


#: The compiled kernels, built on first use and shared by every Brush.
_compiled: dict[Callable, CompiledWithFallback] = {}


class Brush(PaintRenderer):
    """The paper's paint action space on a fast, batched, pure-torch brush.

    Takes the arguments of :class:`~spiral_ppl.renderers.paint.PaintRenderer` (canvas_size,
    grid_size, color, sizes, pressure_levels, color_bins, background, width_scale), plus:

    :param softness: width of the stroke's soft edge as a fraction of its radius (0 gives the
        one-pixel anti-aliased edge of a hard pen, the default). The edge ramps linearly over
        ``1 + softness * radius`` pixels centred on the radius, so the stroke's 50 % width
        stays ``2 * radius``.
    :param opacity_exponent: a stroke of pressure ``p`` has opacity ``p ** opacity_exponent``
        (1: opacity equals pressure; below 1 light strokes carry more ink, as libmypaint's
        overlapping dabs do).
    :param compile: fuse the per-pixel arithmetic with :func:`torch.compile` (about 8 times
        faster on CPU, more on a GPU; the first call compiles for ~20 s). ``None`` compiles
        for calls of at least :data:`COMPILE_FROM_PIXELS` pixels (64 canvases of 64x64), where
        the time pays back, unless the environment variable ``SPIRAL_PPL_COMPILE=0`` says
        otherwise (it does not override an explicit ``True``). Falls back to eager mode with
        a warning when compiling fails.
    """

    compares_while_painting = True  #: :meth:`step_and_compare` paints, gathers and scores in one pass

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
        softness: float = 0.0,
        opacity_exponent: float = 1.0,
        compile: bool | None = None,
    ) -> None:
        super().__init__(
            canvas_size=canvas_size,
            grid_size=grid_size,
            color=color,
            sizes=sizes,
            pressure_levels=pressure_levels,
            color_bins=color_bins,
            background=background,
            width_scale=width_scale,
        )
        self.softness = checks.number_in("softness", softness, 0, 2)
        self.opacity_exponent = checks.number_in("opacity_exponent", opacity_exponent, 0, 4, open_low=True)
        self.compile = checks.optional_switch("compile", compile, none="compile large batches")
        self._pixel_grids: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._tile_grids: dict[torch.device, _Tiles] = {}

    def settings(self) -> dict:
        return {
            **super().settings(),
            "softness": self.softness,
            "opacity_exponent": self.opacity_exponent,
            "compile": self.compile,
        }

    def _pixels(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` coordinates ``(H * W,)`` of every pixel centre, row by row."""
        if device not in self._pixel_grids:
            coordinates = torch.arange(self.canvas_size, dtype=torch.float32, device=device)
            ys, xs = torch.meshgrid(coordinates, coordinates, indexing="ij")
            self._pixel_grids[device] = (xs.reshape(-1), ys.reshape(-1))
        return self._pixel_grids[device]

    def _tiles(self, device: torch.device) -> _Tiles:
        if device not in self._tile_grids:
            self._tile_grids[device] = _cut_into_tiles(self.canvas_size, TILE_SIZE, device)
        return self._tile_grids[device]

    # -- the step-wise protocol ------------------------------------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> BrushState:
        device = check_new_states(batch_size, device, 4 * self.channels * self.canvas_size**2)
        canvas = self.background.to(device).view(1, self.channels, 1, 1)
        canvas = canvas.expand(batch_size, self.channels, self.canvas_size, self.canvas_size).clone()
        return BrushState(canvas, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, state: BrushState, action: Mapping[str, torch.Tensor]) -> BrushState:
        canvas, position = check_state(state, BrushState)
        self.check_step(action, canvas.shape[0])
        stroke, action = self._stroke(position, action, canvas.device)
        canvas = self._paint(canvas, None, stroke)
        return BrushState(canvas, action["end_point"])

    def step_and_compare(
        self,
        state: BrushState,
        action: Mapping[str, torch.Tensor],
        targets: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> tuple[BrushState, torch.Tensor]:
        """One stroke (on the canvases ``rows`` of ``state``, if given) and each new canvas's
        squared error against its target, in the stroke kernel's one pass over the pixels."""
        canvas, position = check_state(state, BrushState)
        if rows is not None:
            rows = rows.to(canvas.device)
            position = position.index_select(0, rows)
        self.check_step(action, position.shape[0])
        self.check_targets(targets, position.shape[0])
        stroke, action = self._stroke(position, action, canvas.device)
        canvas, error = self._paint(canvas, rows, stroke, targets.to(canvas.device))
        return BrushState(canvas, action["end_point"]), error

    def canvas(self, state: BrushState) -> torch.Tensor:
        return check_state(state, BrushState).canvas

    def _stroke(self, position: torch.Tensor, action: Mapping[str, torch.Tensor], device: torch.device):
        """The kernel arguments of one stroke from ``position``, and the action on ``device``."""
        action = {name: value.to(device=device, dtype=torch.long) for name, value in action.items()}
        start = self.grid_to_pixels(position)
        control = self.grid_to_pixels(action["control_point"])
        end = self.grid_to_pixels(action["end_point"])
        radius = self.stroke_radius(action["brush_size"])
        opacity = self.pressure(action["pressure"]).pow(self.opacity_exponent)
        opacity = opacity * action["flag"].to(torch.float32)
        edge = 1 + self.softness * radius
        stroke = (start, control, end, radius, edge, opacity, self.ink(action))
        return stroke, action

    def _paint(self, canvas: torch.Tensor, rows: torch.Tensor | None, stroke: tuple, *targets: torch.Tensor):
        """Paint ``stroke`` (from :meth:`_stroke`) on the canvases ``canvas[rows]`` (all of them
        if ``rows`` is None); with ``targets``, also return the squared errors against them.

        Large calls on the CPU paint only the tiles each stroke may ink. Choosing them ends in
        a list of (stroke, tile) pairs whose length depends on the strokes, so it is computed
        apart from the kernel that paints them. On a GPU every pixel is painted: there the
        tiles measured slower (an H200 at 262,144 canvases: 9.5 million strokes/s against
        11.6 million) and differed from every-pixel painting by up to 0.078 (eager and
        compiled runs together; the cause is not traced), where on the CPU they agree to 1e-5.
        """
        canvases = canvas.shape[0] if rows is None else rows.shape[0]
        if canvas.device.type != "cpu" or canvases * self.canvas_size**2 < TILES_FROM_PIXELS:
            kernel = self._kernel(_paint_every_pixel_and_compare if targets else _paint_every_pixel, canvases)
            return kernel(canvas, rows, *targets, *stroke, *self._pixels(canvas.device))
        tiles = self._tiles(canvas.device)
        near = self._kernel(_tiles_near_strokes, canvases)(*stroke[:6], tiles.first, tiles.last)
        stroke_of, tile_of = near.nonzero(as_tuple=True)
        kernel = self._kernel(_paint_tiles_and_compare if targets else _paint_tiles, canvases)
        return kernel(canvas, rows, *targets, stroke_of, tile_of, *stroke, tiles)

    def _kernel(self, function: Callable, canvases: int) -> Callable:
        """``function`` itself, or compiled when :attr:`compile` asks for it at this many canvases."""
        if self.compile is None:
            use_compiled = canvases * self.canvas_size**2 >= COMPILE_FROM_PIXELS and compile_allowed()
        else:
            use_compiled = self.compile
        if not use_compiled:
            return function
        if function not in _compiled:
            _compiled[function] = CompiledWithFallback(function, "brush")
        return _compiled[function]
