"""spiral_ppl: inverse graphics as probabilistic programming.

Renderers are Pyro programs with named discrete latent sites; SPIRAL (an adversarially
trained painting policy), MCMC, SMC and importance sampling are engines that invert them
behind one interface, so learned and search-based inverse graphics can be compared on the
same images under the same budget of renderer calls.
"""

from spiral_ppl import data, inference, programs, renderers
from spiral_ppl.compare import Comparison, compare, paired_difference
from spiral_ppl.inference.budget import Budget

__version__ = "0.1.0"

__all__ = [
    "Budget", "Comparison", "compare", "data", "inference", "paired_difference", "plots", "programs", "renderers",
    "__version__",
]


def __getattr__(name: str):
    # sp.plots imports matplotlib, which nothing else needs: it is loaded on first use.
    if name == "plots":
        import importlib

        return importlib.import_module("spiral_ppl.plots")
    raise AttributeError(f"module 'spiral_ppl' has no attribute {name!r}")
