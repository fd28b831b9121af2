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
from spiral_ppl.programs.meter import Measurement, RenderMeter
from spiral_ppl.programs.pyro_program import PyroProgram
from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram
from spiral_ppl.programs.scene_program import DEFAULT_COMMAND_PRIOR, SceneProgram
from spiral_ppl.programs.stepwise import PrefixStepwise, RendererStepwise, Stepwise

__all__ = [
    "DEFAULT_COMMAND_PRIOR",
    "DEFAULT_PIXEL_SCALE",
    "Measurement",
    "PaintProgram",
    "PixelNormal",
    "PrefixStepwise",
    "Program",
    "PyroProgram",
    "RenderMeter",
    "RendererProgram",
    "RendererStepwise",
    "SceneProgram",
    "Stepwise",
    "mean_squared_error",
    "sample_sites",
    "site_name",
    "trace",
]
