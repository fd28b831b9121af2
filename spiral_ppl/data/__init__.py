"""Datasets: loaders of real image sets and procedural generators, as torch Datasets."""

from spiral_ppl.data.cache import default_root
from spiral_ppl.data.mnist import MNIST
from spiral_ppl.data.mujoco_scenes import MujocoScenes

__all__ = ["MNIST", "MujocoScenes", "default_root"]
