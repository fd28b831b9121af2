"""Renderers: pure image makers, batched integer actions in, images ``(B, C, H, W)`` out."""

from spiral_ppl.renderers.base import Component, Renderer, validate_actions
from spiral_ppl.renderers.brush import Brush, BrushState
from spiral_ppl.renderers.mujoco_scene import MujocoScene, SceneState

__all__ = ["Brush", "BrushState", "Component", "MujocoScene", "Renderer", "SceneState", "validate_actions"]
