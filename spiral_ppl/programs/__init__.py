"""Programs: Pyro models with named discrete sites ``step_{t}/{component}`` built on renderers."""

from spiral_ppl.programs.base import (
    DEFAULT_PIXEL_SCALE,
    Program,
    mean_squared_error,
    sample_sites,
    site_name,
    trace,
)
from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram

__all__ = [
    "DEFAULT_PIXEL_SCALE",
    "PaintProgram",
    "Program",
    "RendererProgram",
    "mean_squared_error",
    "sample_sites",
    "site_name",
    "trace",
]
