r"""The paper's paint engine: the paint action space on the real libmypaint.

:class:`MyPaint` reads the same programs as :class:`~spiral_ppl.renderers.Brush` (the same
action space and geometry, from :class:`~spiral_ppl.renderers.paint.PaintRenderer`) and paints
them with libmypaint, the brush engine SPIRAL used (Ganin et al. 2018, section 4), through the
ctypes binding of :mod:`spiral_ppl.renderers.libmypaint`. It is the faithful reference; the
torch Brush is the fast approximation.

A stroke is the quadratic Bezier curve :math:`p(\tau)` from the brush position through the
control point to the end point. A fresh brush of the preset (``classic/dry_brush`` by
default) is placed at :math:`p(0)` (the first ``mypaint_brush_stroke_to`` of a brush only places
it) and moved to :math:`p(i / n)`, :math:`i = 1 \dots n`, in
:math:`n` = ``substeps`` (50) calls of ``mypaint_brush_stroke_to``, each lasting ``dtime``
seconds of simulated time, with

- base radius ``radius_logarithmic = log(r)``, ``r`` the radius of the ``brush_size`` action;
- pointer pressure ``(level + 1) / pressure_levels``; the preset maps pressure to opacity,
  radius, scatter... (dry_brush: opacity grows with pressure, dabs scatter more);
- colour ``color_h, color_s, color_v`` from the ``red``, ``green``, ``blue`` bins (white
  for grayscale canvases).

A jump (``flag = 0``) moves the brush position and paints nothing. Every stroke uses a new
brush, whose random generator libmypaint seeds with a constant, so a stroke is a pure function
of (canvas, brush position, action): a program rendered twice, alone or in a batch, whole or
step by step, gives the same image.

The brush paints on a transparent layer (premultiplied RGBA, kept in the state) that is
composited over the background: ``canvas = rgb + (1 - alpha) * background``. Grayscale
canvases paint white ink and keep one channel, so, as with Brush, ink is 1 on a 0 background.

libmypaint runs on the CPU, one stroke at a time; ``workers=N`` spreads large batches over
``N`` processes (started with the ``spawn`` method, since library handles do not survive a
fork).

Example::

    >>> import torch, spiral_ppl as sp
    >>> mypaint = sp.renderers.MyPaint(canvas_size=64, grid_size=32)
    >>> stroke = {"flag": torch.tensor([[1]]), "end_point": torch.tensor([[31 * 32 + 31]]),
    ...           "control_point": torch.tensor([[31]]), "brush_size": torch.tensor([[3]]),
    ...           "pressure": torch.tensor([[9]])}
    >>> image = mypaint.render(stroke)
    >>> image.shape, image.amax().item() > 0.99, image[0, 0, 63, 0].item()
    (torch.Size([1, 1, 64, 64]), True, 0.0)

References: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018; libmypaint, https://github.com/mypaint/libmypaint.
"""

from __future__ import annotations

import colorsys
import multiprocessing
import os
import threading
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from spiral_ppl import checks
from spiral_ppl.checks import non_negative_int, positive_int
from spiral_ppl.renderers.base import check_new_states, check_state, validate_actions
from spiral_ppl.renderers.libmypaint import (
    FIXED_ONE,
    LIBRARY_VARIABLE,
    BrushPreset,
    FixedTiledSurface,
    find_preset,
    load_library,
)
from spiral_ppl.renderers.paint import DEFAULT_SIZES, PaintRenderer

#: A batch is split over the worker processes only when each gets at least this many canvases;
#: below that, starting the work costs more than it saves.
MIN_CANVASES_PER_WORKER = 8

#: Duration of the move that places a fresh brush at a stroke's start. libmypaint filters the
#: pointer ("slow tracking") before it places a new brush, from the origin; a long move lets the
#: filter settle, so the stroke starts where it should.
PLACEMENT_SECONDS = 1.0


class MyPaintState(NamedTuple):
    """The state of a batch of canvases: the paint layer plus where each brush rests."""

    #: ``(B, 4, H, W)`` float premultiplied RGBA of the paint layer, in steps of ``2 ** -15``.
    layer: torch.Tensor
    #: ``(B,)`` flat grid index ``y * grid_size + x`` of the brush.
    position: torch.Tensor


class MyPaint(PaintRenderer):
    """The paper's paint action space on libmypaint (see the module docstring).

    Takes the arguments of :class:`~spiral_ppl.renderers.paint.PaintRenderer` (canvas_size,
    grid_size, color, sizes, pressure_levels, color_bins, background, width_scale), plus:

    :param brush: a preset of the mypaint-brushes package by name (``"classic/dry_brush"``,
        ``"classic/pen"``, ...) or a path to a ``.myb`` file.
    :param substeps: pointer moves per stroke (points of the Bezier curve after its start).
    :param dtime: simulated seconds per pointer move; it sets the pointer's speed, which some
        presets map to radius or opacity, and how closely slow-tracking presets follow it.
    :param workers: number of worker processes for large batches (0: paint in this process).
    :param brush_dir: folder of presets; defaults to ``$SPIRAL_PPL_MYPAINT_BRUSHES`` or the
        system's mypaint-brushes folder.
    :param library: path of the libmypaint shared library; defaults to
        ``$SPIRAL_PPL_LIBMYPAINT`` or the system's libmypaint.

    Raises :class:`RuntimeError` with the install command when libmypaint or the presets are
    missing.
    """

    def __init__(
        self,
        canvas_size: int = 64,
        grid_size: int = 32,
        brush: str = "classic/dry_brush",
        color: bool = False,
        sizes: Sequence[float] = DEFAULT_SIZES,
        pressure_levels: int = 10,
        color_bins: int = 20,
        background: float | Sequence[float] = 0.0,
        width_scale: float = 1.0,
        substeps: int = 50,
        dtime: float = 0.05,
        workers: int = 0,
        brush_dir: str | os.PathLike | None = None,
        library: str | os.PathLike | None = None,
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
        positive_int("substeps", substeps)
        checks.number_in("dtime", dtime, 0, 1, open_low=True, hint="seconds")
        non_negative_int("workers", workers)
        self.brush = brush
        self.substeps = substeps
        self.dtime = float(dtime)
        self.workers = workers
        self.brush_dir = None if brush_dir is None else os.fspath(brush_dir)
        self.library = None if library is None else os.fspath(library)
        # Resolved now, so that the environment variables are read once and worker processes
        # load the very same files; loading fails here, with the install command, if need be.
        self._preset_path = str(find_preset(brush, brush_dir))
        self._library_path = self.library or os.environ.get(LIBRARY_VARIABLE) or None
        _painter(self._painter_key())
        self._executor: ProcessPoolExecutor | None = None
        self._executor_finalizer: weakref.finalize | None = None

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "brush": self.brush,
            "substeps": self.substeps,
            "dtime": self.dtime,
            "workers": self.workers,
            "brush_dir": self.brush_dir,
            "library": self.library,
        }

    def _painter_key(self) -> tuple:
        return (self._preset_path, self._library_path, self.canvas_size, self.substeps, self.dtime)

    # -- the step-wise protocol ------------------------------------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> MyPaintState:
        device = check_new_states(batch_size, device, 4 * 4 * self.canvas_size**2)
        size = self.canvas_size
        layer = torch.zeros(batch_size, 4, size, size, device=device)
        return MyPaintState(layer, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, state: MyPaintState, action: Mapping[str, torch.Tensor]) -> MyPaintState:
        layer, position = check_state(state, MyPaintState)
        self.check_step(action, layer.shape[0])
        program = {name: value[:, None] for name, value in action.items()}
        fixed_point = (layer.detach().cpu().permute(0, 2, 3, 1) * FIXED_ONE).round().to(torch.int32)
        pixels = fixed_point.numpy().astype(np.uint16)
        pixels = self._paint(pixels, position, program)
        layer = _layer_from_pixels(pixels).to(layer.device)
        return MyPaintState(layer, action["end_point"].to(device=position.device, dtype=torch.long))

    def canvas(self, state: MyPaintState) -> torch.Tensor:
        layer = check_state(state, MyPaintState).layer
        alpha = layer[:, 3:]
        ink = layer[:, :3] if self.color else layer[:, :3].mean(1, keepdim=True)
        background = self.background.to(layer.device).view(1, self.channels, 1, 1)
        return (ink + (1 - alpha) * background).clamp(0, 1)

    def render(self, actions: Mapping[str, torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
        """Render whole programs ``{name: LongTensor[B, T]}`` -> images ``(B, C, H, W)``.

        The same images as stepping through the program, with one surface upload per canvas.
        """
        batch_size, _ = validate_actions(self.action_space, actions, ndim=2)
        if device is None:
            device = next(iter(actions.values())).device
        position = torch.zeros(batch_size, dtype=torch.long)
        layer = _layer_from_pixels(self._paint(None, position, actions))
        return self.canvas(MyPaintState(layer.to(device), position))

    # -- painting --------------------------------------------------------------------------

    def _strokes(self, position: torch.Tensor, actions: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-stroke parameters ``(B, T, ...)`` in libmypaint's coordinates, as numpy arrays."""
        actions = {name: value.detach().to("cpu", torch.long) for name, value in actions.items()}
        end_point = actions["end_point"]
        start_point = torch.cat([position.detach().to("cpu", torch.long)[:, None], end_point[:, :-1]], dim=1)
        ink = self.ink({name: value.flatten() for name, value in actions.items()})
        # libmypaint puts pixel centres at half-integers, the action space at integers.
        return {
            "start": (self.grid_to_pixels(start_point) + 0.5).numpy(),
            "control": (self.grid_to_pixels(actions["control_point"]) + 0.5).numpy(),
            "end": (self.grid_to_pixels(end_point) + 0.5).numpy(),
            "radius": self.stroke_radius(actions["brush_size"]).numpy(),
            "pressure": self.pressure(actions["pressure"]).numpy(),
            "ink": ink.view(*end_point.shape, -1).numpy(),
            "flag": (actions["flag"] == 1).numpy(),
        }

    def _paint(
        self, pixels: np.ndarray | None, position: torch.Tensor, actions: Mapping[str, torch.Tensor]
    ) -> np.ndarray:
        """Paint programs on layers ``(B, H, W, 4)`` (None: transparent), here or in workers."""
        strokes = self._strokes(position, actions)
        batch_size = strokes["flag"].shape[0]
        chunks = min(self.workers, batch_size // MIN_CANVASES_PER_WORKER)
        if chunks < 2:
            return paint_strokes(self._painter_key(), pixels, strokes)
        bounds = np.linspace(0, batch_size, chunks + 1).round().astype(int)
        parts = [slice(low, high) for low, high in zip(bounds[:-1], bounds[1:])]
        executor = self._worker_pool()
        futures = [
            executor.submit(
                paint_strokes,
                self._painter_key(),
                None if pixels is None else pixels[part],
                {name: value[part] for name, value in strokes.items()},
            )
            for part in parts
        ]
        return np.concatenate([future.result() for future in futures])

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker)
            self._executor_finalizer = weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
        return self._executor

    def close(self) -> None:
        """Stop the worker processes, if any were started (they also stop with the renderer)."""
        if self._executor is not None:
            self._executor_finalizer.detach()  # else it would keep the closed pool alive with the renderer
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = self._executor_finalizer = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_executor"] = state["_executor_finalizer"] = None  # a pool belongs to the process that started it
        return state

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, brush={self.brush!r})"


def _layer_from_pixels(pixels: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 4)`` uint16 fixed point -> ``(B, 4, H, W)`` float (exact)."""
    return torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2).contiguous() / FIXED_ONE


class _Painter:
    """What painting needs in one process: the preset and one reusable surface."""

    def __init__(self, key: tuple) -> None:
        preset_path, library, canvas_size, substeps, dtime = key
        self.preset = BrushPreset.load(preset_path, library=load_library(library))
        self.surface = FixedTiledSurface(canvas_size, canvas_size, self.preset.library)
        self.tau = np.linspace(0.0, 1.0, substeps + 1)[:, None]
        self.dtime = dtime
        self.lock = threading.Lock()

    def paint(self, pixels: np.ndarray | None, strokes: Mapping[str, np.ndarray]) -> np.ndarray:
        flag = strokes["flag"]
        batch_size, steps = flag.shape
        size = self.surface.height
        out = np.empty((batch_size, size, size, 4), dtype=np.uint16)
        tau = self.tau
        # Points of every stroke's curve, (B, T, substeps + 1, 2).
        start, control, end = (strokes[name][:, :, None, :] for name in ("start", "control", "end"))
        curves = (1 - tau) ** 2 * start + 2 * (1 - tau) * tau * control + tau**2 * end
        hsv = _hsv(strokes["ink"])
        radius, pressure = strokes["radius"].tolist(), strokes["pressure"].tolist()
        surface, dtime = self.surface, self.dtime
        with self.lock:
            for item in range(batch_size):
                surface.write(None if pixels is None else pixels[item])
                for t in np.flatnonzero(flag[item]).tolist():
                    brush = self.preset.new_brush(radius[item][t], hsv[item][t])
                    try:
                        with surface.painting():
                            (x, y), *points = curves[item, t].tolist()
                            brush.stroke_to(surface, x, y, pressure[item][t], PLACEMENT_SECONDS)
                            for x, y in points:
                                brush.stroke_to(surface, x, y, pressure[item][t], dtime)
                    finally:
                        brush.close()
                surface.read(out=out[item])
        return out


def _hsv(ink: np.ndarray) -> list[list[tuple[float, float, float]]]:
    """Ink colours ``(B, T, C)`` -> HSV triples; one channel means white ink (grayscale)."""
    if ink.shape[-1] == 1:
        return [[(0.0, 0.0, 1.0)] * ink.shape[1] for _ in range(ink.shape[0])]
    return [[colorsys.rgb_to_hsv(*rgb) for rgb in row] for row in ink.tolist()]


_painters: dict[tuple, _Painter] = {}
_painters_lock = threading.Lock()


def _painter(key: tuple) -> _Painter:
    with _painters_lock:
        if key not in _painters:
            _painters[key] = _Painter(key)
        return _painters[key]


def paint_strokes(key: tuple, pixels: np.ndarray | None, strokes: Mapping[str, np.ndarray]) -> np.ndarray:
    """Paint per-stroke parameters on layers in this process (the unit of work of a worker)."""
    return _painter(key).paint(pixels, strokes)


def _init_worker() -> None:
    # libmypaint draws tiles in OpenMP threads; worker processes already share the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


__all__ = ["MyPaint", "MyPaintState"]
