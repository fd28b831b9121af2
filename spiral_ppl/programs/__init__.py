"""Programs: Pyro models with named discrete sites ``step_{t}/{component}`` built on renderers."""

from spiral_ppl.programs.base import (
    DEFAULT_PIXEL_SCALE,
    Program,
    mean_squared_error,
    require_fixed_structure,
    sample_sites,
    site_name,
    trace,
)
from spiral_ppl.programs.likelihood import PixelNormal
from spiral_ppl.programs.meter import Measurement, RenderMeter
from spiral_ppl.programs.pyro_program import PyroProgram
from spiral_ppl.programs.reference import ProgramReference, reference_of, resolve_program
from spiral_ppl.programs.renderer_program import PaintProgram, RendererProgram
from spiral_ppl.programs.scene_program import DEFAULT_COMMAND_PRIOR, SceneProgram
from spiral_ppl.programs.stepwise import PrefixStepwise, RendererStepwise, Stepwise
from spiral_ppl.programs.traces import (
    ProgramTrace,
    empirical_posterior,
    enumerate_traces,
    exact_posterior_of_traces,
    run_trace,
    total_variation,
)

__all__ = [
    "DEFAULT_COMMAND_PRIOR",
    "DEFAULT_PIXEL_SCALE",
    "Measurement",
    "PaintProgram",
    "PixelNormal",
    "PrefixStepwise",
    "ProgramTrace",
    "Program",
    "ProgramReference",
    "PyroProgram",
    "RenderMeter",
    "RendererProgram",
    "RendererStepwise",
    "SceneProgram",
    "Stepwise",
    "empirical_posterior",
    "enumerate_traces",
    "exact_posterior_of_traces",
    "mean_squared_error",
    "reference_of",
    "require_fixed_structure",
    "resolve_program",
    "run_trace",
    "sample_sites",
    "site_name",
    "total_variation",
    "trace",
]
