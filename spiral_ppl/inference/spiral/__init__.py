"""SPIRAL (Ganin et al. 2018): an RL painting policy trained against a WGAN-GP critic.

One concept per module:

- the agent: :mod:`.agent` (:class:`Spiral` and its :class:`Decoding`), :mod:`.config`
  (:class:`SpiralConfig`, every hyper-parameter);
- the networks: :mod:`.policy`, :mod:`.decoders` (one decoder per action component),
  :mod:`.critic` (discriminator and WGAN-GP loss);
- inference: :mod:`.engine` (passes, best of them, an unconditional agent's samples, the
  guided SMC), :mod:`.guide` (the policy
  as a Pyro guide), :mod:`.proposal` (the policy as an SMC step proposal);
- training: :mod:`.training` (the A2C loop, top to bottom), :mod:`.imitation` (behaviour
  cloning, DAgger, self-imitation), :mod:`.recipe` (phases run by one driver),
  :mod:`.episodes` (where episodes come from), :mod:`.rollout`, :mod:`.rewards`,
  :mod:`.replay`, :mod:`.vtrace`, :mod:`.sources` (training images), :mod:`.logs`;
- on Ray: :mod:`.distributed` (rollout workers) and :mod:`.pbt` (population-based training);
- files: :mod:`.checkpoints`.
"""

from spiral_ppl.inference.spiral.agent import Decoding, Spiral
from spiral_ppl.inference.spiral.config import (
    A2CConfig,
    CriticConfig,
    Phase,
    PolicyConfig,
    RewardConfig,
    SpiralConfig,
    TrainConfig,
)
from spiral_ppl.inference.spiral.critic import Critic, wgan_gp_loss
from spiral_ppl.inference.spiral.distributed import RayEpisodes
from spiral_ppl.inference.spiral.engine import Samples
from spiral_ppl.inference.spiral.episodes import EpisodeBatch, EpisodeSource, LocalEpisodes
from spiral_ppl.inference.spiral.guide import SpiralGuide
from spiral_ppl.inference.spiral.policy import Policy
from spiral_ppl.inference.spiral.proposal import SpiralProposal
from spiral_ppl.inference.spiral.replay import ReplayBuffer
from spiral_ppl.inference.spiral.rollout import Episode, replay, rollout
from spiral_ppl.inference.spiral.training import Learner, TrainingDiverged
from spiral_ppl.inference.spiral.vtrace import VTraceTargets, vtrace

__all__ = [
    "A2CConfig", "Critic", "CriticConfig", "Decoding", "Episode", "EpisodeBatch", "EpisodeSource", "Learner",
    "LocalEpisodes", "Phase", "Policy", "PolicyConfig", "RayEpisodes", "ReplayBuffer", "RewardConfig", "Samples",
    "Spiral", "SpiralConfig", "SpiralGuide", "SpiralProposal", "TrainConfig", "TrainingDiverged", "VTraceTargets", "replay",
    "rollout", "vtrace", "wgan_gp_loss",
]
