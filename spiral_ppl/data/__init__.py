"""Datasets: loaders of real image sets and procedural generators."""

from spiral_ppl.data.cache import default_root
from spiral_ppl.data.mnist import MNIST

__all__ = ["MNIST", "default_root"]
