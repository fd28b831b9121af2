r"""The SPIRAL policy network: canvas (and target) in, one action of any program out.

Per step :math:`t` the network reads the canvas :math:`x_t` (and, when conditional, the
target :math:`x^\ast`; both optionally contrast-stretched around 0.5, see
``SpiralConfig.input_contrast``) with two coordinate channels, adds a bias computed from the
previous action (and, when unconditional, a noise vector drawn once per episode), downsamples
with strided convolutions to 8x8, applies residual blocks and a fully connected layer and updates
an LSTM. From the LSTM output :math:`z` an autoregressive decoder samples the components of
the action in the order of ``prog.action_space``:

.. math::

    a_{t,k} \sim \pi_k(\cdot \mid z_{t,k}), \qquad z_{t,k+1} = z_{t,k} + W_k\,e_k(a_{t,k}),

with :math:`e_k` a 16-d embedding of the sampled value. Scalar components have a linear
head; location components a convolutional one (the vector is reshaped to a small map,
residual blocks and transposed convolutions upsample it to ``grid_size x grid_size``
logits). A linear value head reads :math:`z_{t,0}`. The heads are built from the action
space alone, so any :class:`~spiral_ppl.programs.Program` gets a policy without new code.

With ``SpiralConfig.location_readout`` a sampled location :math:`\ell` also adds what the
first convolution saw where that location appears in the image,

.. math::

    z_{t,k+1} \mathrel{+}= R_k \sum_p \operatorname{softmax}(A_k[\ell])_p\, \mathrm{relu}(f_t)_p,

with :math:`f_t` the stem's features average-pooled to the location grid and :math:`A_k` a
learned table of where each location is seen, started at "the same cell" (right for a
brush, whose grid lies on the canvas; a camera's perspective is learned). The components that
follow (an object's size and colour after its place) can then read the target there instead
of recovering it from :math:`z` (an addition to the paper's architecture).

With ``SpiralConfig.spatial_locations`` a location component's logits also get a term read
off the image at every cell :math:`p` of its grid,

.. math::

    \ell_p \mathrel{+}= w^\top \mathrm{relu}\big(C_2\,\mathrm{relu}(C_1\,\mathrm{relu}(f_t + Q z_{t,k}))\big)_p,

with :math:`C_1, C_2` 3x3 convolutions over the grid of pooled features and :math:`Q z` the
decoder's state broadcast to every cell (what it is looking for). Where to put a stroke is
then a local question about the pixels there (is there ink in the target that the canvas
lacks, does a line end here) rather than one the fully connected layer and the LSTM must
carry the answer to; fully convolutional spatial policies are the same idea (Vinyals et al.
2017, StarCraft II). The output layer starts at zero, so a new policy starts as the paper's.
The head assumes that location cell :math:`p` is seen near pixel cell :math:`p`: exact for a
brush, whose grid lies on the canvas; for a camera's view of a scene only as far as the two
convolutions can shift what they read (two cells).

Reference: Ganin et al., "Synthesizing Programs for Images using Reinforced Adversarial
Learning", ICML 2018, appendix (architecture); He et al. 2016 (residual blocks).

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
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from spiral_ppl.renderers.base import Component

#: ``choose(component, logits) -> LongTensor``: how the decoder picks each component's value.
Chooser = Callable[[Component, torch.Tensor], torch.Tensor]


def sample_categorical(component: Component, logits: torch.Tensor) -> torch.Tensor:
    """Draw one value per row from ``softmax(logits)`` (the default chooser)."""
    return torch.multinomial(logits.float().softmax(-1), 1).squeeze(-1)


def check_temperature(value: float) -> float:
    """``value`` as a float if it is a valid sampling temperature, else a clear ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"temperature must be a positive finite number (1: the policy as trained), got {value!r}")
    return float(value)


class StepOutput(NamedTuple):
    """What one policy step returns; all tensors have a leading batch dimension ``B``."""

    action: dict[str, torch.Tensor]
    log_prob: torch.Tensor  # (B,) log pi(a_t | s_t), summed over components
    entropy: torch.Tensor  # (B,) entropy of each component's distribution, summed
    value: torch.Tensor  # (B,) V(s_t)
    hidden: tuple[torch.Tensor, torch.Tensor]


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(F.relu(self.first(F.relu(x))))


def coordinate_channels(batch: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, 2, size, size)`` x and y coordinates in ``[-1, 1]`` (CoordConv)."""
    line = torch.linspace(-1, 1, size, device=device, dtype=dtype)
    ys, xs = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, 2, size, size)


class LocationHead(nn.Module):
    """Hidden vector -> ``grid_size ** 2`` logits through a small upsampling conv decoder."""

    def __init__(self, hidden: int, grid_size: int, channels: int) -> None:
        super().__init__()
        # Start from the largest odd factor of the grid (at most 4 wide) and double up to it,
        # so grids of any size get a decoder: 32 = 4 * 2^3, 16 = 4 * 2^2, 6 = 3 * 2.
        start, doublings = grid_size, 0
        while start % 2 == 0 and start > 4:
            start, doublings = start // 2, doublings + 1
        self.start, self.channels = start, channels
        self.project = nn.Linear(hidden, channels * start * start)
        layers: list[nn.Module] = [ResBlock(channels)]
        for _ in range(doublings):
            layers += [nn.ReLU(), nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)]
        layers += [nn.ReLU(), nn.Conv2d(channels, 1, 3, padding=1)]
        self.decode = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.project(z).view(-1, self.channels, self.start, self.start)
        return self.decode(grid).flatten(1)


class SpatialLocationHead(nn.Module):
    """Per-cell location logits from the pooled image features and the decoder's state."""

    def __init__(self, width: int, hidden: int, blocks: int = 0) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, width)
        layers: list[nn.Module] = [
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()
        ]
        for _ in range(blocks):
            block = ResBlock(width)
            # Each extra block starts as the identity, so a head with more blocks computes what
            # the head without them did (a trained agent can be deepened and trained on).
            nn.init.zeros_(block.second.weight)
            nn.init.zeros_(block.second.bias)
            layers.append(block)
        self.convolve = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``pooled``: ``(B, width, G, G)``; ``z``: ``(B, hidden)``. Returns ``(B, G * G)`` logits."""
        looking_for = self.query(z)[:, :, None, None].to(pooled.dtype)
        return self.out(self.convolve(F.relu(pooled + looking_for))).flatten(1)


class Policy(nn.Module):
    """The recurrent policy and value network of a SPIRAL agent.

    :param action_space: the program's components, in sampling order.
    :param channels: image channels of the program.
    :param image_size: side of the program's square images.
    :param conditional: whether the policy also sees the target image.
    :param config: sizes of the layers (:class:`~spiral_ppl.inference.spiral.SpiralConfig`).
    """

    def __init__(self, action_space, channels: int, image_size: int, *, conditional: bool, config) -> None:
        super().__init__()
        self.action_space = tuple(action_space)
        self.conditional = conditional
        self.input_contrast = config.input_contrast
        self.noise_size = 0 if conditional else config.noise_size
        width, hidden = config.policy_channels, config.lstm_size
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
        self.fc_norm = nn.LayerNorm(hidden) if config.lstm_input_norm else nn.Identity()
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.value_head = nn.Linear(hidden, 1)

        self.heads = nn.ModuleList(
            LocationHead(hidden, c.grid_size, config.location_channels)
            if c.kind == "location"
            else nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, c.size))
            for c in self.action_space
        )
        self.sample_embedding = nn.ModuleList(nn.Embedding(c.size, 16) for c in self.action_space)
        self.sample_update = nn.ModuleList(nn.Linear(16, hidden) for _ in self.action_space)
        located = [c for c in self.action_space if c.kind == "location"] if config.location_readout else []
        self.readout = nn.ModuleDict({c.name: nn.Linear(width, hidden) for c in located})
        # Softmax logits of 5 on the diagonal put 37% of the weight of a 16x16 grid on the same cell.
        self.readout_where = nn.ParameterDict({c.name: nn.Parameter(5.0 * torch.eye(c.size)) for c in located})
        spatial = [c for c in self.action_space if c.kind == "location"] if config.spatial_locations else []
        self.spatial_heads = nn.ModuleDict({c.name: SpatialLocationHead(width, hidden, config.spatial_head_blocks)
                                            for c in spatial})

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
        """
        temperature = check_temperature(temperature)  # 0 or NaN would otherwise surface as non-finite logits
        batch = canvas.shape[0]
        images = [canvas] + ([target] if self.conditional else [])
        if self.input_contrast != 1:
            images = [0.5 + self.input_contrast * (image - 0.5) for image in images]
        images.append(coordinate_channels(batch, canvas.shape[-1], canvas.device, canvas.dtype))
        features = self.stem(torch.cat(images, dim=1))
        # What the readout and the spatial heads look at, pooled once per grid size.
        pooled_by_grid = {
            grid: F.adaptive_avg_pool2d(F.relu(features), grid)  # (B, width, grid, grid)
            for grid in {c.grid_size for c in self.action_space
                         if c.name in self.readout or c.name in self.spatial_heads}
        }

        # The previous action enters as a per-channel bias of the first feature map.
        if previous is None:
            embedded = [torch.zeros(batch, e.embedding_dim, device=canvas.device) for e in self.previous_action]
        else:
            embedded = [e(previous[c.name]) for e, c in zip(self.previous_action, self.action_space)]
        bias = self.action_mlp(torch.cat(embedded, dim=-1))
        if self.noise_mlp is not None:
            bias = bias + self.noise_mlp(noise)
        features = features + bias[:, :, None, None]

        h, cell = self.lstm(F.relu(self.fc_norm(self.fc(self.body(features)))), hidden)
        value = self.value_head(h).squeeze(-1)
        z = h

        action, log_prob, entropy = {}, 0.0, 0.0
        for component, head, embedding, update in zip(
            self.action_space, self.heads, self.sample_embedding, self.sample_update
        ):
            logits = head(z).float()
            if component.name in self.spatial_heads:
                logits = logits + self.spatial_heads[component.name](pooled_by_grid[component.grid_size], z).float()
            if temperature != 1.0:
                logits = logits / temperature
            logits = logits.log_softmax(-1)
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"the policy produced non-finite logits for component {component.name!r}")
            chosen = choose(component, logits).reshape(batch).long()
            action[component.name] = chosen
            log_prob = log_prob + logits.gather(-1, chosen[:, None]).squeeze(-1)
            entropy = entropy - (logits.exp() * logits).sum(-1)
            z = z + update(embedding(chosen))  # later components see this one
            if component.name in self.readout:
                pooled = pooled_by_grid[component.grid_size].flatten(2)  # (B, width, cells)
                where = self.readout_where[component.name][chosen].softmax(-1).to(pooled.dtype)  # (B, cells)
                looked_up = torch.einsum("bwc,bc->bw", pooled, where)
                z = z + self.readout[component.name](looked_up)
        return StepOutput(action, log_prob, entropy, value.float(), (h, cell))


def widen(narrow: Policy, wide: Policy) -> Policy:
    r"""Load ``narrow``'s weights into ``wide``, a policy with more image-feature channels, so
    that ``wide`` computes exactly the same action distributions and values; returns ``wide``.

    A small policy that has stopped improving can so continue training with more capacity
    instead of starting again (Net2Net, Chen, Goodfellow and Shlens, ICLR 2016). This is the
    zero-initialised variant of their widening: every weight of ``narrow`` is copied into the
    leading block of the matching weight of ``wide``; the new channels keep ``wide``'s random
    initial weights into them, and every weight *out of* a new channel into an old unit is
    set to zero. By induction over the layers the old units then see exactly what they saw
    before, so the logits and the value are unchanged, while the new channels already compute
    features. Those features reach the old units as soon as the first gradient step moves the
    zeroed weights (their gradient, the old unit's error times the new channel's activation,
    is not zero), and the weights into the new channels learn from then on.

    Only ``policy_channels`` may differ between the two (the image features' width, which
    the stem, the strided body, the ResBlocks, the action bias, the readout and the spatial
    heads share); every other size must match. Flattened ``(channels, 8, 8)`` features keep
    their channel-major order, so the old ones are the leading block of the new ones too.
    """
    narrow_width, wide_width = narrow.stem.out_channels, wide.stem.out_channels
    if wide_width < narrow_width:
        raise ValueError(f"widen goes from fewer to more channels, got {narrow_width} -> {wide_width}")
    narrow_state, wide_state = narrow.state_dict(), wide.state_dict()
    if narrow_state.keys() != wide_state.keys():
        differ = sorted(narrow_state.keys() ^ wide_state.keys())
        raise ValueError(f"the two policies differ in more than their width (layers only in one: {differ[:5]})")
    # Sizes that are not multiples of the width could grow by the same factor by coincidence
    # (an LSTM of 16 next to 16 channels), and the copy below would then scramble them.
    if _sizes_besides_width(narrow) != _sizes_besides_width(wide):
        raise ValueError(f"only policy_channels may differ between the two policies; the LSTM, location heads "
                         f"or embeddings differ too: {_sizes_besides_width(narrow)} and {_sizes_besides_width(wide)}")
    widened = {}
    for name, old in narrow_state.items():
        new = wide_state[name].clone()
        grown = [axis for axis in range(old.ndim) if new.shape[axis] != old.shape[axis]]
        # Every grown axis is the width, or the width times the flattened 8x8 grid.
        if old.ndim != new.ndim or any(old.shape[axis] * wide_width != new.shape[axis] * narrow_width
                                       for axis in grown):
            raise ValueError(f"{name}: {tuple(old.shape)} cannot grow into {tuple(new.shape)}; only "
                             "policy_channels may differ between the two policies")
        new[tuple(slice(0, size) for size in old.shape)] = old
        if old.ndim >= 2 and 1 in grown:  # weights (out, in, ...): new inputs reach no old output
            new[: old.shape[0], old.shape[1]:] = 0
        widened[name] = new
    wide.load_state_dict(widened)
    return wide


def _sizes_besides_width(policy: Policy) -> dict[str, Any]:
    """The layer sizes that :func:`widen` must find equal in both policies."""
    return {
        "lstm": policy.lstm.hidden_size,
        "noise": policy.noise_size,
        "location_channels": [head.channels for head in policy.heads if isinstance(head, LocationHead)],
        "embeddings": [embedding.embedding_dim for embedding in policy.previous_action],
    }
