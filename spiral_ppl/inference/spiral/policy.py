r"""The SPIRAL policy network: canvas (and target) in, one action of any program out.

Per step :math:`t` the network reads the canvas :math:`x_t` (and, when conditional, the
target :math:`x^\ast`; both optionally contrast-stretched around 0.5, see
``PolicyConfig.input_contrast``) with two coordinate channels, adds a bias computed from the
previous action (and, when unconditional, a noise vector drawn once per episode), downsamples
with strided convolutions to 8x8, applies residual blocks and a fully connected layer and
updates an LSTM. From the LSTM output :math:`z` an autoregressive decoder chooses the
components of the action in the order of ``prog.action_space``, one
:mod:`~spiral_ppl.inference.spiral.decoders` module per component:

.. math::

    a_{t,k} \sim \pi_k(\cdot \mid z_{t,k}), \qquad z_{t,k+1} = z_{t,k} + W_k\,e_k(a_{t,k}).

A linear value head reads :math:`z_{t,0}`. The decoders are built from the action space
alone, so any :class:`~spiral_ppl.programs.Program` gets a policy without new code.

Reference: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018, appendix (architecture).

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.spiral import Policy, SpiralConfig
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=8), steps=2)
    >>> policy = Policy(prog.action_space, prog.channels, prog.image_size, conditional=True,
    ...                 config=SpiralConfig.small())
    >>> hidden = policy.initial_hidden(3, torch.device("cpu"))
    >>> canvas = torch.zeros(3, 1, 16, 16)
    >>> out = policy.step(canvas, canvas, None, None, hidden)
    >>> sorted(out.action), out.log_prob.shape, out.value.shape
    (['brush_size', 'control_point', 'end_point', 'flag', 'pressure'], torch.Size([3]), torch.Size([3]))
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from spiral_ppl.inference.spiral.config import PolicyConfig, SpiralConfig
from spiral_ppl.inference.spiral.decoders import ImageFeatures, ResBlock, build_decoders
from spiral_ppl.renderers.base import Component

#: ``choose(component, logits) -> LongTensor``: how the decoder picks each component's value.
Chooser = Callable[[Component, torch.Tensor], torch.Tensor]


def sample_categorical(component: Component, logits: torch.Tensor) -> torch.Tensor:
    """Draw one value per row from ``softmax(logits)`` (the default chooser)."""
    return torch.multinomial(logits.float().softmax(-1), 1).squeeze(-1)


def check_temperature(value: float) -> float:
    """``value`` as a float if it is a valid sampling temperature, else a clear ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"temperature must be a positive finite number (1: the policy as trained), got {value!r}")
    return float(value)


class StepOutput(NamedTuple):
    """What one policy step returns; all tensors have a leading batch dimension ``B``."""

    action: dict[str, torch.Tensor]
    log_prob: torch.Tensor  # (B,) log pi(a_t | s_t), summed over components
    entropy: torch.Tensor  # (B,) entropy of each component's distribution, summed
    value: torch.Tensor  # (B,) V(s_t)
    hidden: tuple[torch.Tensor, torch.Tensor]


def coordinate_channels(batch: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, 2, size, size)`` x and y coordinates in ``[-1, 1]`` (CoordConv)."""
    line = torch.linspace(-1, 1, size, device=device, dtype=dtype)
    ys, xs = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, 2, size, size)


class Policy(nn.Module):
    """The recurrent policy and value network of a SPIRAL agent.

    :param action_space: the program's components, in decoding order.
    :param channels: image channels of the program.
    :param image_size: side of the program's square images.
    :param conditional: whether the policy also sees the target image.
    :param config: the network's sizes and location decoder (:class:`PolicyConfig`, or the
        ``policy`` section of a :class:`SpiralConfig`).
    """

    def __init__(self, action_space, channels: int, image_size: int, *, conditional: bool,
                 config: PolicyConfig) -> None:
        super().__init__()
        config = config.policy if isinstance(config, SpiralConfig) else config
        if not isinstance(config, PolicyConfig):
            raise TypeError(f"config must be a PolicyConfig or a SpiralConfig, got {type(config).__name__}")
        self.action_space = tuple(action_space)
        self.conditional = conditional
        self.input_contrast = config.input_contrast
        self.canvas_channels, self.image_size = channels, image_size
        self.noise_size = 0 if conditional else config.noise_size
        width, hidden = config.channels, config.lstm_size
        inputs = channels * (2 if conditional else 1) + 2

        self.stem = nn.Conv2d(inputs, width, 5, padding=2)
        self.previous_action = nn.ModuleList(nn.Embedding(c.size, config.action_embedding) for c in self.action_space)
        self.action_mlp = nn.Sequential(
            nn.Linear(config.action_embedding * len(self.action_space), width), nn.ReLU(), nn.Linear(width, width)
        )
        self.noise_mlp = nn.Linear(self.noise_size, width) if self.noise_size else None

        down: list[nn.Module] = []
        size = image_size
        while size > 8:  # strided convolutions down to 8x8: one for 16x16, three for 64x64
            down += [nn.ReLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
            size = (size + 1) // 2
        down += [ResBlock(width) for _ in range(config.res_blocks)] + [nn.ReLU(), nn.Flatten()]
        self.body = nn.Sequential(*down)
        self.fc = nn.Linear(width * size * size, hidden)
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.value_head = nn.Linear(hidden, 1)
        self.decoders = build_decoders(self.action_space, config.location_decoder, hidden=hidden,
                                       embedding=config.action_embedding, location_channels=config.location_channels,
                                       width=width)
        # oneDNN's CPU convolutions are faster on channels-last tensors (about 1.5x for a whole
        # update, benchmarks/RESULTS.md); the outputs follow the weights' layout.
        self.to(memory_format=torch.channels_last)

    def _stretch(self, image: torch.Tensor) -> torch.Tensor:
        return image if self.input_contrast == 1 else 0.5 + self.input_contrast * (image - 0.5)

    def fixed_features(self, target: torch.Tensor | None, batch: int, device: torch.device,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
        r"""The first convolution's response to what an episode never changes: the target (of a
        conditional policy), the coordinate channels and the bias.

        The convolution is linear in its input channels, so with its weight split by input,
        :math:`W * [x_t, x^\ast, c] + b = W_x * x_t + (W_\ast * x^\ast + W_c * c + b)`; the
        bracket is the same at every step of an episode, and :func:`~.rollout.rollout`
        computes it once.
        """
        coordinates = coordinate_channels(batch, self.image_size, device, dtype)
        inputs = ([self._stretch(target)] if self.conditional else []) + [coordinates]
        weight = self.stem.weight[:, self.canvas_channels:]
        return F.conv2d(torch.cat(inputs, dim=1), weight, self.stem.bias, padding=2)

    def initial_hidden(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.lstm.hidden_size, device=device)
        return zeros, zeros.clone()

    def step(
        self,
        canvas: torch.Tensor,
        target: torch.Tensor | None,
        previous: Mapping[str, torch.Tensor] | None,
        noise: torch.Tensor | None,
        hidden: tuple[torch.Tensor, torch.Tensor],
        choose: Chooser = sample_categorical,
        temperature: float = 1.0,
        fixed: torch.Tensor | None = None,
    ) -> StepOutput:
        r"""One step: observe, update the LSTM, decode an action component by component.

        :param canvas: ``(B, C, H, W)`` what the agent sees.
        :param target: ``(B, C, H, W)`` the target (conditional policies), else ``None``.
        :param previous: the previous action ``{name: LongTensor[B]}``, ``None`` at ``t = 0``.
        :param noise: ``(B, noise_size)`` for unconditional policies, else ``None``.
        :param choose: picks each component's value from its logits (sampling by default;
            the Pyro guide passes ``pyro.sample``).
        :param temperature: each component's distribution is :math:`\mathrm{softmax}(\ell /
            \tau)` of its logits :math:`\ell`; ``choose``, the log-probability and the entropy
            all see the tempered distribution (1: the policy as trained).
        :param fixed: :meth:`fixed_features` of ``target``, which episodes compute once rather
            than at every step (computed here when not given).
        """
        temperature = check_temperature(temperature)  # 0 or NaN would otherwise surface as non-finite logits
        batch = canvas.shape[0]
        if fixed is None:
            fixed = self.fixed_features(target, batch, canvas.device, canvas.dtype)
        features = F.conv2d(self._stretch(canvas), self.stem.weight[:, :self.canvas_channels], padding=2) + fixed
        image = ImageFeatures(features)  # what location decoders read, before the action's bias

        # The previous action enters as a per-channel bias of the first feature map.
        if previous is None:
            embedded = [torch.zeros(batch, e.embedding_dim, device=canvas.device) for e in self.previous_action]
        else:
            embedded = [e(previous[c.name]) for e, c in zip(self.previous_action, self.action_space)]
        bias = self.action_mlp(torch.cat(embedded, dim=-1))
        if self.noise_mlp is not None:
            bias = bias + self.noise_mlp(noise)
        features = features + bias[:, :, None, None]

        h, cell = self.lstm(F.relu(self.fc(self.body(features))), hidden)
        value = self.value_head(h).squeeze(-1)
        z = h

        action, log_prob, entropy = {}, 0.0, 0.0
        for component in self.action_space:
            decoder = self.decoders[component.name]
            logits = decoder.logits(z, image).float()
            if temperature != 1.0:
                logits = logits / temperature
            logits = logits.log_softmax(-1)
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"the policy produced non-finite logits for component {component.name!r}")
            chosen = choose(component, logits).reshape(batch).long()
            action[component.name] = chosen
            log_prob = log_prob + logits.gather(-1, chosen[:, None]).squeeze(-1)
            entropy = entropy - (logits.exp() * logits).sum(-1)
            z = decoder.update(z, chosen, image)  # later components see this one
        return StepOutput(action, log_prob, entropy, value.float(), (h, cell))


def upgrade_state_dict(state: dict[str, torch.Tensor], action_space) -> dict[str, torch.Tensor]:
    """A policy's weights as checkpoints of the first format laid them out (one list of modules per
    kind of layer) -> one decoder module per component, as :class:`Policy` holds them now."""
    names = [c.name for c in action_space]
    moved = {"heads": "head", "sample_embedding": "embedding", "sample_update": "update_layer"}
    upgraded = {}
    for key, value in state.items():
        first, _, rest = key.partition(".")
        if first in moved:
            index, _, tail = rest.partition(".")
            key = f"decoders.{names[int(index)]}.{moved[first]}.{tail}"
        elif first in ("readout", "readout_where", "spatial_heads"):
            name, _, tail = rest.partition(".")
            part = {"readout": "readout", "readout_where": "where", "spatial_heads": "spatial"}[first]
            key = f"decoders.{name}.{part}" + (f".{tail}" if tail else "")
        upgraded[key] = value
    return upgraded
