"""Programs whose every step is one action of a :class:`~spiral_ppl.renderers.Renderer`."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from spiral_ppl.programs.base import Program
from spiral_ppl.programs.stepwise import RendererStepwise
from spiral_ppl.renderers.base import Renderer


class RendererProgram(Program):
    """A program of ``steps`` actions of ``renderer``, with the renderer's action space.

    The step-wise protocol (:attr:`stepwise`) uses the renderer's own state (a canvas and a
    brush position for a brush), so engines that look at intermediate canvases pay one
    stroke per step rather than re-drawing the prefix.

    :param renderer: any :class:`~spiral_ppl.renderers.Renderer`.
    :param steps: number of actions.
    :param kwargs: priors, pixel_scale, likelihood: see :class:`~spiral_ppl.programs.Program`.
    """

    def __init__(self, renderer: Renderer, steps: int, **kwargs: Any) -> None:
        if not isinstance(renderer, Renderer):
            raise TypeError(f"renderer must be a spiral_ppl.renderers.Renderer, got {type(renderer).__name__}")
        self.renderer = renderer
        self.action_space = renderer.action_space
        self.channels = renderer.channels
        self.image_size = renderer.image_size
        super().__init__(steps, **kwargs)

    def draw(self, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.renderer.render(actions)

    @property
    def stepwise(self) -> RendererStepwise:
        """The renderer's own step-wise states (:class:`~spiral_ppl.programs.stepwise.RendererStepwise`)."""
        return RendererStepwise(self, self.renderer)

    def blank_canvas(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return self.renderer.canvas(self.renderer.initial_state(batch_size, device=device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.renderer!r}, steps={self.steps})"


class PaintProgram(RendererProgram):
    """The paper's painting program: ``steps`` brush strokes (20 by default).

    Example::

        >>> import spiral_ppl as sp
        >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=64, grid_size=32), steps=20)
        >>> [c.name for c in prog.action_space]
        ['flag', 'end_point', 'control_point', 'brush_size', 'pressure']
    """

    def __init__(self, renderer: Renderer, steps: int = 20, **kwargs: Any) -> None:
        super().__init__(renderer, steps, **kwargs)
