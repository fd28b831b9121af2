"""Renderers: pure image makers, batched integer actions in, images ``(B, C, H, W)`` out."""

from spiral_ppl.renderers.base import Component, Renderer, validate_actions
from spiral_ppl.renderers.brush import Brush, BrushState

__all__ = ["Brush", "BrushState", "Component", "Renderer", "validate_actions"]
