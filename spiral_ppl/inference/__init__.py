"""Inference engines behind one interface: ``engine.infer(prog, images, budget) -> Result``."""

from spiral_ppl.inference.budget import Budget, RenderMeter
from spiral_ppl.inference.engine import Engine
from spiral_ppl.inference.importance import Importance, effective_sample_size
from spiral_ppl.inference.result import Curve, Result
from spiral_ppl.inference.spiral import Spiral, SpiralConfig

__all__ = ["Budget", "Curve", "Engine", "Importance", "RenderMeter", "Result", "Spiral", "SpiralConfig", "effective_sample_size"]
