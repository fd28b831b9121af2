"""Renderers: pure image makers, batched integer actions in, images ``(B, C, H, W)`` out."""

from spiral_ppl.renderers.base import Component, Renderer, validate_actions
from spiral_ppl.renderers.brush import Brush, BrushState
from spiral_ppl.renderers.mypaint import MyPaint, MyPaintState
from spiral_ppl.renderers.paint import PaintRenderer

__all__ = [
    "Brush",
    "BrushState",
    "Component",
    "MyPaint",
    "MyPaintState",
    "PaintRenderer",
    "Renderer",
    "validate_actions",
]
