"""SPIRAL (Ganin et al. 2018): an RL painting policy trained against a WGAN-GP critic.

One concept per module: :mod:`.policy` (the network), :mod:`.critic` (discriminator and
WGAN-GP loss), :mod:`.rewards`, :mod:`.replay` (replay buffer), :mod:`.rollout` (batched
episodes), :mod:`.learner` (hyper-parameters and the A2C update), :mod:`.guide` (the
policy as a Pyro guide), :mod:`.proposal` (the policy as an SMC step proposal),
:mod:`.sources` (training images), :mod:`.logs`, :mod:`.vtrace` (off-policy correction),
:mod:`.distributed` (rollout workers on Ray), :mod:`.pbt` (population-based training on
Ray Tune) and :mod:`.agent` (:class:`Spiral`, the engine).
"""

from spiral_ppl.inference.spiral.agent import Spiral
from spiral_ppl.inference.spiral.critic import Critic, wgan_gp_loss
from spiral_ppl.inference.spiral.distributed import RayBackend
from spiral_ppl.inference.spiral.guide import SpiralGuide
from spiral_ppl.inference.spiral.learner import Learner, SpiralConfig, TrainingDiverged
from spiral_ppl.inference.spiral.policy import Policy, widen
from spiral_ppl.inference.spiral.proposal import SpiralProposal
from spiral_ppl.inference.spiral.replay import ReplayBuffer
from spiral_ppl.inference.spiral.rollout import Episode, replay, rollout
from spiral_ppl.inference.spiral.vtrace import VTraceTargets, vtrace

__all__ = [
    "Critic", "Episode", "Learner", "Policy", "RayBackend", "ReplayBuffer", "Spiral", "SpiralConfig", "SpiralGuide",
    "SpiralProposal", "TrainingDiverged", "VTraceTargets", "replay", "rollout", "vtrace", "wgan_gp_loss", "widen",
]
