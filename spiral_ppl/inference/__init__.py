"""Inference engines behind one interface: ``engine.infer(prog, images, budget) -> Result``."""

from spiral_ppl.inference.budget import Budget
from spiral_ppl.inference.engine import Engine
from spiral_ppl.inference.enumeration import ExactPosterior, enumerate_posterior
from spiral_ppl.inference.importance import Importance, RenderingGuide, effective_sample_size
from spiral_ppl.inference.mcmc import MCMC, BlockedMetropolisHastings
from spiral_ppl.inference.proposals import GuideProposal, PriorProposal, ResidualStepProposal, StepProposal
from spiral_ppl.inference.result import Curve, Result
from spiral_ppl.inference.smc import SMC
from spiral_ppl.inference.spiral import Spiral, SpiralConfig
from spiral_ppl.inference.trace_mh import TraceMH

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
    "RenderingGuide",
    "ResidualStepProposal",
    "Result",
    "SMC",
    "Spiral",
    "SpiralConfig",
    "StepProposal",
    "TraceMH",
    "effective_sample_size",
    "enumerate_posterior",
]
