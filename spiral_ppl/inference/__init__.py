"""Inference engines behind one interface: ``engine.infer(prog, images, budget) -> Result``."""

from spiral_ppl.inference.budget import Budget, RenderMeter
from spiral_ppl.inference.engine import Engine
from spiral_ppl.inference.enumeration import ExactPosterior, enumerate_posterior
from spiral_ppl.inference.importance import Importance, effective_sample_size
from spiral_ppl.inference.mcmc import MCMC, BlockedMetropolisHastings
from spiral_ppl.inference.proposals import GuideProposal, PriorProposal, StepProposal
from spiral_ppl.inference.result import Curve, Result
from spiral_ppl.inference.smc import SMC

__all__ = [
    "MCMC",
    "BlockedMetropolisHastings",
    "Budget",
    "Curve",
    "Engine",
    "ExactPosterior",
    "GuideProposal",
    "Importance",
    "PriorProposal",
    "RenderMeter",
    "Result",
    "SMC",
    "StepProposal",
    "effective_sample_size",
    "enumerate_posterior",
]
