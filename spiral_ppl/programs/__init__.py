"""Programs: Pyro models with named discrete sites ``step_{t}/{component}`` built on renderers."""

from spiral_ppl.programs.base import (
    DEFAULT_PIXEL_SCALE,
    Program,
    mean_squared_error,
    sample_sites,
    site_name,
    trace,
)
from spiral_ppl.programs.likelihood import PixelNormal
from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram
from spiral_ppl.programs.scene_program import DEFAULT_COMMAND_PRIOR, SceneProgram

__all__ = [
    "DEFAULT_COMMAND_PRIOR",
    "DEFAULT_PIXEL_SCALE",
    "PaintProgram",
    "PixelNormal",
    "Program",
    "RendererProgram",
    "SceneProgram",
    "mean_squared_error",
    "sample_sites",
    "site_name",
    "trace",
]
