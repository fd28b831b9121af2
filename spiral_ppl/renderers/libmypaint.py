"""A ctypes binding of the system libmypaint: brush presets, a fixed-size tiled surface.

libmypaint (https://github.com/mypaint/libmypaint) is the brush engine of the MyPaint
painting program and the paint engine of the SPIRAL paper. This module binds the handful of
its C functions that painting a stroke needs; nothing is compiled. Facts it relies on
(libmypaint 1.5/1.6, Debian package ``libmypaint-1.5-1``, soname ``libmypaint-1.5.so.1``):

- ``mypaint_brush_stroke_to(brush, surface, x, y, pressure, xtilt, ytilt, dtime)`` moves
  the pointer and leaves dabs on the surface; the first call after ``mypaint_brush_new`` (or
  a reset) only places the pointer. Pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``.
- Dabs are queued per tile and drawn by ``mypaint_surface_end_atomic``; painting is framed by
  ``begin_atomic`` / ``end_atomic``.
- A ``MyPaintFixedTiledSurface`` keeps ``ceil(W/64) x ceil(H/64)`` tiles of 64x64 pixels in
  one buffer; a tile is ``uint16`` RGBA, row-major, *premultiplied* by alpha, in 15-bit
  fixed point (``1 << 15`` is 1.0). A new surface is filled with ``0xffff`` bytes, not a
  valid colour, so :class:`FixedTiledSurface` clears it before use.
- A brush draws random numbers (dab offsets, radius jitter) from a generator seeded with a
  constant in ``mypaint_brush_new``; a fresh brush therefore paints the same stroke the
  same way every time.
- Presets are ``.myb`` JSON files (``{"version": 3, "settings": {name: {"base_value",
  "inputs"}}}``) in the ``mypaint-brushes`` data folder, loaded with
  ``mypaint_brush_from_string``. A setting absent from the JSON keeps the base value 0 and no
  input mapping that ``mypaint_brush_new`` gives it.

Example::

    >>> from spiral_ppl.renderers.libmypaint import BrushPreset, FixedTiledSurface
    >>> preset = BrushPreset.load("classic/pen")
    >>> surface = FixedTiledSurface(32, 32)
    >>> with preset.new_brush(radius=2.0, hsv=(0.0, 0.0, 1.0)) as brush:
    ...     with surface.painting():
    ...         for x in range(4, 29):
    ...             brush.stroke_to(surface, x + 0.5, 16.5, pressure=1.0, dtime=0.05)
    >>> alpha = surface.read()[..., 3] / (1 << 15)  # (32, 32, 4) uint16, premultiplied
    >>> round(float(alpha[16, 16]), 3), float(alpha[4, 16])  # on the line, 12 px beside it
    (1.0, 0.0)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

#: How to install what this module needs on Debian and Ubuntu.
INSTALL_COMMAND = "apt-get install libmypaint-1.5-1 mypaint-brushes"

#: Environment variables that point the loader at a library file or a brush folder.
LIBRARY_VARIABLE = "SPIRAL_PPL_LIBMYPAINT"
BRUSH_DIR_VARIABLE = "SPIRAL_PPL_MYPAINT_BRUSHES"

#: Library names tried in order when no path is given (1.5/1.6 and 1.3 share the ABI used here).
LIBRARY_NAMES = ("libmypaint-1.5.so.1", "libmypaint-1.6.so.1", "libmypaint-1.3.so.0", "libmypaint.so")

#: Folders the ``mypaint-brushes`` packages install presets to (2.x, then 1.x).
BRUSH_DIRS = (
    "/usr/share/mypaint-data/2.0/brushes",
    "/usr/share/mypaint-data/1.0/brushes",
    "/usr/local/share/mypaint-data/2.0/brushes",
    "/usr/local/share/mypaint-data/1.0/brushes",
)

#: 15-bit fixed point: the integer that stands for 1.0 in a tile.
FIXED_ONE = 1 << 15
#: Side of libmypaint's tiles in pixels.
TILE_SIZE = 64

_void_p = ctypes.c_void_p


class _TileRequest(ctypes.Structure):
    """``MyPaintTileRequest`` of mypaint-tiled-surface.h."""

    _fields_ = [
        ("tx", ctypes.c_int),
        ("ty", ctypes.c_int),
        ("readonly", ctypes.c_int),
        ("buffer", ctypes.POINTER(ctypes.c_uint16)),
        ("context", _void_p),
        ("thread_id", ctypes.c_int),
        ("mipmap_level", ctypes.c_int),
    ]


class _Rectangle(ctypes.Structure):
    """``MyPaintRectangle`` of mypaint-rectangle.h."""

    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int)]


# name: (restype, argtypes)
_SIGNATURES = {
    "mypaint_brush_new": (_void_p, []),
    "mypaint_brush_unref": (None, [_void_p]),
    "mypaint_brush_from_string": (ctypes.c_int, [_void_p, ctypes.c_char_p]),
    "mypaint_brush_set_base_value": (None, [_void_p, ctypes.c_int, ctypes.c_float]),
    "mypaint_brush_get_base_value": (ctypes.c_float, [_void_p, ctypes.c_int]),
    "mypaint_brush_setting_from_cname": (ctypes.c_int, [ctypes.c_char_p]),
    "mypaint_brush_stroke_to": (
        ctypes.c_int,
        [_void_p, _void_p] + [ctypes.c_float] * 5 + [ctypes.c_double],
    ),
    "mypaint_fixed_tiled_surface_new": (_void_p, [ctypes.c_int, ctypes.c_int]),
    "mypaint_fixed_tiled_surface_interface": (_void_p, [_void_p]),
    "mypaint_surface_unref": (None, [_void_p]),
    "mypaint_surface_begin_atomic": (None, [_void_p]),
    "mypaint_surface_end_atomic": (None, [_void_p, ctypes.POINTER(_Rectangle)]),
    "mypaint_tile_request_init": (
        None,
        [ctypes.POINTER(_TileRequest), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int],
    ),
    "mypaint_tiled_surface_tile_request_start": (None, [_void_p, ctypes.POINTER(_TileRequest)]),
    "mypaint_tiled_surface_tile_request_end": (None, [_void_p, ctypes.POINTER(_TileRequest)]),
}

_libraries: dict[str, ctypes.CDLL] = {}


def _missing(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what}. MyPaint renders with the system libmypaint and the mypaint-brushes presets; on "
        f"Debian or Ubuntu install them with `{INSTALL_COMMAND}` (as root), or point "
        f"{LIBRARY_VARIABLE} at libmypaint-1.5.so.1 and {BRUSH_DIR_VARIABLE} at the brushes folder."
    )


def load_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """The libmypaint shared library with its function signatures declared.

    :param path: a library file; defaults to ``$SPIRAL_PPL_LIBMYPAINT``, then the system's
        libmypaint found by soname. Raises :class:`RuntimeError` with the install command when
        it cannot be loaded or lacks the functions used here.
    """
    path = os.fspath(path) if path is not None else os.environ.get(LIBRARY_VARIABLE) or None
    candidates = [path] if path else [*LIBRARY_NAMES, ctypes.util.find_library("mypaint")]
    key = path or ""
    if key in _libraries:
        return _libraries[key]
    errors = []
    for candidate in filter(None, candidates):
        try:
            library = ctypes.CDLL(candidate)
        except OSError as error:
            errors.append(str(error))
            continue
        absent = [name for name in _SIGNATURES if not hasattr(library, name)]
        if absent:
            raise _missing(f"{candidate} is not a libmypaint 1.3-1.6 library (it lacks {absent[:3]})")
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(library, name)
            function.restype, function.argtypes = restype, argtypes
        _libraries[key] = library
        return library
    raise _missing(f"could not load libmypaint ({'; '.join(errors) or 'no candidate found'})")


def find_brush_dir(brush_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``.myb`` presets: ``brush_dir``, ``$SPIRAL_PPL_MYPAINT_BRUSHES``, or
    the first of :data:`BRUSH_DIRS` that exists."""
    given = brush_dir if brush_dir is not None else os.environ.get(BRUSH_DIR_VARIABLE) or None
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise _missing(f"the brush folder {folder} does not exist")
        return folder
    for candidate in BRUSH_DIRS:
        if Path(candidate).is_dir():
            return Path(candidate)
    raise _missing(f"no mypaint-brushes folder found (looked in {', '.join(BRUSH_DIRS)})")


def find_preset(name: str, brush_dir: str | os.PathLike | None = None) -> Path:
    """The ``.myb`` file of a preset: ``name`` itself if it is a path to one, else
    ``<brushes folder>/<name>.myb`` (see :func:`find_brush_dir`)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"brush must be a preset name such as 'classic/dry_brush' or a .myb path, got {name!r}")
    path = Path(name)
    if path.suffix == ".myb" and path.is_file():
        return path.resolve()
    folder = find_brush_dir(brush_dir)
    path = folder / f"{name.removesuffix('.myb')}.myb"
    if not path.is_file():
        collection = name.split("/")[0] if "/" in name else "classic"
        available = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.glob(f"{collection}/*.myb"))
        raise ValueError(
            f"no brush preset {name!r} in {folder}; presets of {collection!r} there: {available[:16]}"
            + (" ..." if len(available) > 16 else "")
        )
    return path.resolve()


class BrushPreset:
    """A libmypaint brush preset (a ``.myb`` file), ready to make fresh brushes from.

    Settings the painter controls (radius, colour) are set on each new brush; the rest, and
    every dynamic of the preset (pressure, speed and random inputs), come from the file.

    :param name: the preset's name, e.g. ``"classic/dry_brush"``.
    :param text: the preset's JSON.
    :param library: the loaded libmypaint (see :func:`load_library`).
    """

    def __init__(self, name: str, text: str, library: ctypes.CDLL) -> None:
        try:
            preset = json.loads(text)
            settings = preset["settings"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"brush preset {name!r} is not a MyPaint .myb JSON file: {error}") from None
        # Parsing dominates making a brush; settings left at libmypaint's fresh-brush value (base
        # 0, no inputs) need not be parsed at all, which halves the cost of every stroke.
        preset["settings"] = {
            setting: value
            for setting, value in settings.items()
            if value.get("base_value", 0) != 0 or value.get("inputs")
        }
        self.name = name
        self.library = library
        self._json = json.dumps(preset, separators=(",", ":")).encode()
        self._ids = {
            setting: library.mypaint_brush_setting_from_cname(setting.encode())
            for setting in ("radius_logarithmic", "color_h", "color_s", "color_v")
        }
        if min(self._ids.values()) < 0:
            raise RuntimeError(f"this libmypaint does not know the settings {self._ids}")
        # Refuse a preset libmypaint cannot read now rather than at the first stroke.
        self.new_brush(radius=1.0, hsv=(0.0, 0.0, 0.0)).close()

    @classmethod
    def load(
        cls,
        name: str,
        brush_dir: str | os.PathLike | None = None,
        library: str | os.PathLike | ctypes.CDLL | None = None,
    ) -> "BrushPreset":
        """Load a preset by name or path (see :func:`find_preset`)."""
        if not isinstance(library, ctypes.CDLL):
            library = load_library(library)
        path = find_preset(name, brush_dir)
        return cls(name, path.read_text(), library)

    def new_brush(self, radius: float, hsv: tuple[float, float, float]) -> "Brush":
        """A fresh brush of this preset with base radius ``radius`` pixels and colour ``hsv``
        (each in ``[0, 1]``)."""
        handle = self.library.mypaint_brush_new()
        if not handle:
            raise MemoryError("mypaint_brush_new returned NULL")
        brush = Brush(handle, self.library)
        if not self.library.mypaint_brush_from_string(handle, self._json):
            brush.close()
            raise ValueError(f"libmypaint could not parse the brush preset {self.name!r}")
        set_base_value = self.library.mypaint_brush_set_base_value
        set_base_value(handle, self._ids["radius_logarithmic"], math.log(radius))
        for setting, value in zip(("color_h", "color_s", "color_v"), hsv):
            set_base_value(handle, self._ids[setting], value)
        return brush

    def __repr__(self) -> str:
        return f"BrushPreset({self.name!r})"


class Brush:
    """One ``MyPaintBrush``; freed by :meth:`close` (or as a context manager)."""

    def __init__(self, handle: int, library: ctypes.CDLL) -> None:
        self.handle = handle
        self.library = library

    def stroke_to(self, surface: "FixedTiledSurface", x: float, y: float, pressure: float, dtime: float) -> None:
        """Move the pointer to ``(x, y)`` (libmypaint pixel coordinates) over ``dtime`` seconds."""
        self.library.mypaint_brush_stroke_to(self.handle, surface.surface, x, y, pressure, 0.0, 0.0, dtime)

    def close(self) -> None:
        if self.handle:
            self.library.mypaint_brush_unref(self.handle)
            self.handle = None

    def __enter__(self) -> "Brush":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class FixedTiledSurface:
    """A ``MyPaintFixedTiledSurface`` of ``width x height`` pixels with numpy access.

    Pixels are exchanged as ``(height, width, 4)`` ``uint16`` arrays of premultiplied RGBA in
    15-bit fixed point. The surface starts transparent (all zeros).
    """

    def __init__(self, width: int, height: int, library: ctypes.CDLL | None = None) -> None:
        self.library = library if library is not None else load_library()
        self.width, self.height = int(width), int(height)
        self.handle = self.library.mypaint_fixed_tiled_surface_new(self.width, self.height)
        if not self.handle:
            raise MemoryError(f"mypaint_fixed_tiled_surface_new({width}, {height}) returned NULL")
        self.surface = self.library.mypaint_fixed_tiled_surface_interface(self.handle)
        self._tiles = [
            (tx, ty)
            for ty in range(-(-self.height // TILE_SIZE))
            for tx in range(-(-self.width // TILE_SIZE))
        ]
        self._request = _TileRequest()
        self._dirty = _Rectangle()
        self.write(None)

    @contextmanager
    def painting(self) -> Iterator["FixedTiledSurface"]:
        """Frame a group of strokes: libmypaint draws the queued dabs when the block ends."""
        self.library.mypaint_surface_begin_atomic(self.surface)
        try:
            yield self
        finally:
            self.library.mypaint_surface_end_atomic(self.surface, ctypes.byref(self._dirty))

    @contextmanager
    def _tile(self, tx: int, ty: int, readonly: bool) -> Iterator[tuple[np.ndarray, slice, slice]]:
        """Tile ``(tx, ty)`` as a ``(64, 64, 4)`` view of the surface's memory, with the rows and
        columns of the canvas it covers."""
        request = self._request
        self.library.mypaint_tile_request_init(ctypes.byref(request), 0, tx, ty, int(readonly))
        self.library.mypaint_tiled_surface_tile_request_start(self.surface, ctypes.byref(request))
        try:
            tile = np.ctypeslib.as_array(request.buffer, shape=(TILE_SIZE, TILE_SIZE, 4))
            rows = slice(ty * TILE_SIZE, min((ty + 1) * TILE_SIZE, self.height))
            columns = slice(tx * TILE_SIZE, min((tx + 1) * TILE_SIZE, self.width))
            yield tile, rows, columns
        finally:
            self.library.mypaint_tiled_surface_tile_request_end(self.surface, ctypes.byref(request))

    def read(self, out: np.ndarray | None = None) -> np.ndarray:
        """The pixels as a ``(height, width, 4)`` uint16 array (into ``out`` if given)."""
        if out is None:
            out = np.empty((self.height, self.width, 4), dtype=np.uint16)
        for tx, ty in self._tiles:
            with self._tile(tx, ty, readonly=True) as (tile, rows, columns):
                out[rows, columns] = tile[: rows.stop - rows.start, : columns.stop - columns.start]
        return out

    def write(self, pixels: np.ndarray | None) -> None:
        """Replace the pixels with a ``(height, width, 4)`` uint16 array, or clear them (None).

        Edge tiles reach past the canvas; that margin is cleared too, so no ink left there by an
        earlier stroke can be picked up by a preset that smudges.
        """
        for tx, ty in self._tiles:
            with self._tile(tx, ty, readonly=False) as (tile, rows, columns):
                tile[:] = 0
                if pixels is not None:
                    tile[: rows.stop - rows.start, : columns.stop - columns.start] = pixels[rows, columns]

    def close(self) -> None:
        if self.handle:
            self.library.mypaint_surface_unref(self.surface)
            self.handle = self.surface = None

    def __del__(self) -> None:
        self.close()
