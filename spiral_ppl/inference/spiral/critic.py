r"""The SPIRAL critic (discriminator) and its WGAN-GP loss.

The critic :math:`D` is a DCGAN-like stack of strided convolutions with leaky ReLUs ending
in one unnormalised score. It is trained as a Wasserstein critic with a gradient penalty
(WGAN-GP), plus a small penalty on its mean score that keeps :math:`D` near zero on average
over real and generated images (a Wasserstein critic is otherwise defined up to a constant,
and the policy's reward is :math:`D` itself):

.. math::

    L_D = \mathbb{E}_{\tilde x}[D(\tilde x)] - \mathbb{E}_{x}[D(x)]
          + \lambda\, \mathbb{E}_{\hat x}\big[(\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2\big]
          + \epsilon \Big(\tfrac12 \mathbb{E}_{x}[D(x)] + \tfrac12 \mathbb{E}_{\tilde x}[D(\tilde x)]\Big)^2,

with :math:`\hat x` uniform on segments between real and generated images and
:math:`\lambda = 10`. A conditional critic scores pairs :math:`D(x \mid x^\ast)`, the image
and the target stacked on the channel axis; real pairs are :math:`(x^\ast, x^\ast)`, and with
``mismatched_pairs`` > 0 part of the generated pairs are real images with another target,
:math:`(x^\ast_j, x^\ast_i)` (a matching-aware critic, Reed et al. 2016). With
``spectral_norm=True`` every layer is spectrally normalised, as in SPIRAL++.

A critic that sees the whole of both images can separate real pairs from fakes by comparing
them pixel for pixel, a shortcut that gives the policy a poor loss surface. SPIRAL++'s
*complement discriminator* (``complement=True``) takes it away: with a binary mask :math:`m`
(one half of the image: left, right, top or bottom), the critic scores the image's half
beside the target's other half,

.. math::

    D_m(x \mid x^\ast) = D(m \odot x \mid (1 - m) \odot x^\ast),

so a real pair is :math:`(m \odot x^\ast, (1 - m) \odot x^\ast)`, a whole target, and it must
judge whether the image's half continues the target's. A mask is drawn per pair for each
critic update (:func:`half_masks`); without masks, the score is the mean over the four halves.

References: Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017;
Radford et al., "Unsupervised Representation Learning with Deep Convolutional GANs", 2016;
Ganin et al. 2018 (the conditional critic); Reed et al., "Generative Adversarial Text to Image
Synthesis", ICML 2016 (mismatched pairs); Mellor et al., "Unsupervised Doodling and
Painting with Improved SPIRAL", 2019 (spectral normalisation, the complement discriminator).

Example::

    >>> import torch
    >>> from spiral_ppl.inference.spiral import Critic, SpiralConfig
    >>> critic = Critic(channels=1, image_size=16, conditional=False, config=SpiralConfig.small())
    >>> real, fake = torch.rand(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    >>> loss, parts = wgan_gp_loss(critic, real, fake, gradient_penalty=10.0, drift_penalty=1e-3)
    >>> sorted(parts)
    ['drift', 'gradient_penalty', 'wasserstein']
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as spectrally_normalised

#: The halves a complement critic's masks keep: left, right, top, bottom.
HALVES = 4


def half_masks(count: int, image_size: int, *, device: torch.device | str = "cpu",
               halves: torch.Tensor | None = None) -> torch.Tensor:
    """``(count, 1, H, W)`` masks that are 1 on one half of the image: ``halves[i]`` in 0..3
    (left, right, top, bottom), drawn uniformly when not given."""
    if halves is None:
        halves = torch.randint(HALVES, (count,), device=device)
    position = torch.arange(image_size, device=device)
    first = position < image_size // 2  # the left columns, or the top rows
    columns = first.view(1, 1, 1, -1).expand(count, 1, image_size, image_size)
    rows = first.view(1, 1, -1, 1).expand(count, 1, image_size, image_size)
    halves = halves.view(-1, 1, 1, 1)
    keep = torch.where(halves == 0, columns, torch.where(halves == 1, ~columns, torch.where(halves == 2, rows, ~rows)))
    return keep.float()


class Critic(nn.Module):
    """A DCGAN-like Wasserstein critic over images, or over (image, target) pairs.

    :param channels: image channels.
    :param image_size: side of the square images.
    :param conditional: score pairs ``D(x | target)``.
    :param config: width, the spectral-normalisation and complement switches
        (:class:`CriticConfig`, or the ``critic`` section of a ``SpiralConfig``).
    """

    def __init__(self, channels: int, image_size: int, *, conditional: bool, config) -> None:
        super().__init__()
        from spiral_ppl.inference.spiral.config import CriticConfig, SpiralConfig

        config = config.critic if isinstance(config, SpiralConfig) else config
        if not isinstance(config, CriticConfig):
            raise TypeError(f"config must be a CriticConfig or a SpiralConfig, got {type(config).__name__}")
        self.conditional, self.image_size = conditional, image_size
        self.complement = config.complement
        wrap = spectrally_normalised if config.spectral_norm else (lambda layer: layer)
        width, inputs, size = config.channels, channels * (2 if conditional else 1), image_size
        layers: list[nn.Module] = []
        # Halve the resolution and double the width down to 4x4 (DCGAN); no batch norm, which
        # would couple the samples the gradient penalty treats one by one.
        while size > 4:
            layers += [wrap(nn.Conv2d(inputs, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            inputs, width, size = width, min(width * 2, 8 * config.channels), (size + 1) // 2
        layers += [nn.Flatten(), wrap(nn.Linear(inputs * size * size, 1))]
        self.net = nn.Sequential(*layers)
        self.to(memory_format=torch.channels_last)  # faster CPU convolutions, as the policy's

    @property
    def complement(self) -> bool:
        """Whether the critic judges halves beside the target's other half (SPIRAL++); settable."""
        return self._complement

    @complement.setter
    def complement(self, value: bool) -> None:
        if value and not self.conditional:
            raise ValueError("critic.complement pairs half of an image with the other half of its target, so it needs "
                             "a conditional agent (agent.conditional = true); set critic.complement = false")
        self._complement = bool(value)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B,)`` of images (and their targets, for a conditional critic).

        :param masks: a complement critic's ``(B, 1, H, W)`` halves of the images it judges
            (:func:`half_masks`); ``None``: the mean score over the four halves.
        """
        if not self.conditional:
            return self.net(images).squeeze(-1).float()
        if targets is None:
            raise ValueError("a conditional critic scores (image, target) pairs; pass the targets")
        if self.complement:
            if masks is None:
                count = images.shape[0]
                every = torch.arange(HALVES, device=images.device).repeat_interleave(count)
                scores = self(images.repeat(HALVES, 1, 1, 1), targets.repeat(HALVES, 1, 1, 1),
                              half_masks(HALVES * count, self.image_size, device=images.device, halves=every))
                return scores.view(HALVES, count).mean(0)
            images, targets = images * masks, targets * (1 - masks)
        return self.net(torch.cat([images, targets], dim=1)).squeeze(-1).float()


def wgan_gp_loss(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    gradient_penalty: float,
    drift_penalty: float,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss ``L_D`` above and its three terms (detached), for logging.

    :param real: ``(B, C, H, W)`` data images (for a conditional critic, the targets again).
    :param fake: ``(B, C, H, W)`` the agent's renders.
    :param targets: ``(B, C, H, W)`` targets of a conditional critic, else ``None``.
    :param masks: a complement critic's halves, one per pair, the same for the real pair, the
        fake and the points between them.
    """
    def score(images: torch.Tensor) -> torch.Tensor:  # any critic(images, targets) works without masks
        return critic(images, targets) if masks is None else critic(images, targets, masks)

    real_score = score(real)
    fake_score = score(fake)
    wasserstein = fake_score.mean() - real_score.mean()

    mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(score(between).sum(), between, create_graph=True)
    penalty = (gradient.flatten(1).float().norm(dim=1) - 1).pow(2).mean()

    drift = (0.5 * real_score.mean() + 0.5 * fake_score.mean()).pow(2)
    loss = wasserstein + gradient_penalty * penalty + drift_penalty * drift
    return loss, {"wasserstein": wasserstein.detach(), "gradient_penalty": penalty.detach(), "drift": drift.detach()}
