"""Renderers: pure image makers, batched integer actions in, images ``(B, C, H, W)`` out."""

from spiral_ppl.renderers.base import Component, Renderer, validate_actions
from spiral_ppl.renderers.brush import DRY_BRUSH_LOOK, Brush, BrushState
from spiral_ppl.renderers.mujoco_scene import MujocoScene, SceneState
from spiral_ppl.renderers.mypaint import MyPaint, MyPaintState
from spiral_ppl.renderers.paint import PaintRenderer

__all__ = [
    "DRY_BRUSH_LOOK",
    "Brush",
    "BrushState",
    "Component",
    "MujocoScene",
    "MyPaint",
    "MyPaintState",
    "PaintRenderer",
    "Renderer",
    "SceneState",
    "validate_actions",
]
