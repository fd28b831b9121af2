"""Datasets: loaders of real image sets and procedural generators, as torch Datasets."""

from spiral_ppl.data.cache import cache_root, default_root
from spiral_ppl.data.celeba import CelebA
from spiral_ppl.data.mnist import MNIST
from spiral_ppl.data.mujoco_scenes import MujocoScenes
from spiral_ppl.data.omniglot import Drawing, Omniglot, OmniglotStrokes, parse_strokes

__all__ = [
    "CelebA",
    "Drawing",
    "MNIST",
    "MujocoScenes",
    "Omniglot",
    "OmniglotStrokes",
    "cache_root",
    "default_root",
    "parse_strokes",
]
