"""Datasets: loaders of image collections and procedural generators, as torch Datasets."""

from spiral_ppl.data.mujoco_scenes import MujocoScenes

__all__ = ["MujocoScenes"]
