r"""How the policy decodes one component of an action from its state :math:`z`.

The policy's decoder is autoregressive over the components of the action space: component
:math:`k` has logits :math:`\ell_k(z_k)`, its value :math:`a_k` is chosen from them, and what
follows sees it through

.. math::

    z_{k+1} = z_k + W_k\,e_k(a_k),

with :math:`e_k` an embedding of the chosen value. Every decoder here has the same two-method
contract, so :meth:`Policy.step <spiral_ppl.inference.spiral.Policy.step>` loops over them
without knowing which is which:

- :meth:`ComponentDecoder.logits` ``(z, image) -> (B, size)``;
- :meth:`ComponentDecoder.update` ``(z, chosen, image) -> z``: the state the next component sees.

``image`` is the step's :class:`ImageFeatures` (the first convolution's features of the canvas
and target), which only the location decoders read. Three decoders, chosen by the component's
kind and ``PolicyConfig.location_decoder``:

- :class:`ComponentDecoder` (every scalar component, and locations under ``"paper"``): the
  paper's decoder. A scalar's head is a two-layer perceptron; a location's
  (:class:`UpsamplingHead`) reshapes the state to a small map and upsamples it by residual
  blocks and transposed convolutions to ``grid_size x grid_size`` logits;
- :class:`ReadoutDecoder` (``"readout"``): the paper's logits; once a location :math:`\ell` is
  chosen, the state also gains what the image shows there,

  .. math::

      z_{k+1} \mathrel{+}= R_k \sum_p \operatorname{softmax}(A_k[\ell])_p\, \mathrm{relu}(f)_p,

  with :math:`f` the features average-pooled to the location grid and :math:`A_k` a learned
  table of where each location is seen, started at "the same cell" (right for a brush, whose
  grid lies on the canvas; a camera's perspective is learned). An object's size and colour,
  decoded after its place, can then read the target there.
- :class:`SpatialDecoder` (``"spatial"``): the readout, and logits that also get a term read off
  the image at every cell :math:`p`,

  .. math::

      \ell_p \mathrel{+}= w^\top \mathrm{relu}\big(C_2\,\mathrm{relu}(C_1\,\mathrm{relu}(f + Q z))\big)_p,

  with :math:`C_1, C_2` 3x3 convolutions over the grid and :math:`Q z` what the decoder is
  looking for, broadcast to every cell. Where to put a stroke becomes a local question about
  the pixels there (fully convolutional spatial policies: Vinyals et al. 2017). :math:`w`
  starts at zero, so a new spatial decoder starts as the paper's. It assumes that location
  cell :math:`p` is seen near pixel cell :math:`p`: exact for a brush.

Reference: Ganin et al. 2018, appendix (the paper's decoder); He et al. 2016 (residual blocks).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spiral_ppl.renderers.base import Component


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(F.relu(self.first(F.relu(x))))


class ImageFeatures:
    """The first convolution's features ``(B, width, H, W)`` of one step, pooled to a grid on demand."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features
        self._pooled: dict[int, torch.Tensor] = {}

    def pooled(self, grid: int) -> torch.Tensor:
        """``(B, width, grid, grid)`` rectified features averaged over each cell of a ``grid x grid`` grid."""
        if grid not in self._pooled:
            rectified, size = F.relu(self.features), self.features.shape[-1]
            # The same average; the fixed-window pooling's backward is several times faster on a CPU.
            self._pooled[grid] = F.avg_pool2d(rectified, size // grid) if size % grid == 0 else \
                F.adaptive_avg_pool2d(rectified, grid)
        return self._pooled[grid]


class ComponentDecoder(nn.Module):
    """Logits of one component from the state, and the state after its value is chosen.

    :param head: state -> logits.
    :param embedding: :math:`e_k`, the chosen value's embedding.
    :param update_layer: :math:`W_k`, from the embedding into the state.
    """

    def __init__(self, component: Component, head: nn.Module, embedding: nn.Embedding,
                 update_layer: nn.Linear) -> None:
        super().__init__()
        self.component, self.head, self.embedding, self.update_layer = component, head, embedding, update_layer

    def logits(self, z: torch.Tensor, image: ImageFeatures) -> torch.Tensor:
        return self.head(z)

    def update(self, z: torch.Tensor, chosen: torch.Tensor, image: ImageFeatures) -> torch.Tensor:
        return z + self.update_layer(self.embedding(chosen))


class UpsamplingHead(nn.Module):
    """State -> ``grid_size ** 2`` logits through a small upsampling convolutional decoder
    (the paper's location head)."""

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


class ReadoutDecoder(ComponentDecoder):
    """The paper's logits; the chosen location then adds what the image shows there to the state."""

    def __init__(self, component: Component, head: nn.Module, embedding: nn.Embedding, update_layer: nn.Linear,
                 readout: nn.Linear) -> None:
        super().__init__(component, head, embedding, update_layer)
        self.readout = readout
        # Softmax logits of 5 on the diagonal put 37% of the weight of a 16x16 grid on the same cell.
        self.where = nn.Parameter(5.0 * torch.eye(component.size))

    def update(self, z: torch.Tensor, chosen: torch.Tensor, image: ImageFeatures) -> torch.Tensor:
        z = super().update(z, chosen, image)
        pooled = image.pooled(self.component.grid_size).flatten(2)  # (B, width, cells)
        where = self.where[chosen].softmax(-1).to(pooled.dtype)  # (B, cells)
        return z + self.readout(torch.einsum("bwc,bc->bw", pooled, where))


class SpatialHead(nn.Module):
    """Per-cell location logits from the pooled image features and the decoder's state."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, width)
        self.convolve = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pooled: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``pooled``: ``(B, width, G, G)``; ``z``: ``(B, hidden)``. Returns ``(B, G * G)`` logits."""
        looking_for = self.query(z)[:, :, None, None].to(pooled.dtype)
        return self.out(self.convolve(F.relu(pooled + looking_for))).flatten(1)


class SpatialDecoder(ReadoutDecoder):
    """The readout decoder whose logits also read the image at every cell."""

    def __init__(self, component: Component, head: nn.Module, embedding: nn.Embedding, update_layer: nn.Linear,
                 readout: nn.Linear, spatial: SpatialHead) -> None:
        super().__init__(component, head, embedding, update_layer, readout)
        self.spatial = spatial

    def logits(self, z: torch.Tensor, image: ImageFeatures) -> torch.Tensor:
        return self.head(z).float() + self.spatial(image.pooled(self.component.grid_size), z).float()


def build_decoders(action_space, location_decoder: str, *, hidden: int, embedding: int, location_channels: int,
                   width: int) -> nn.ModuleDict:
    """One decoder per component of ``action_space``: scalar, or the location decoder named by
    ``location_decoder`` (``"paper"``, ``"readout"`` or ``"spatial"``).

    The layers are created kind by kind across the components (every head, then every
    embedding, every update layer, every readout, every spatial head), so the initial weights
    a seed gives do not depend on how they are grouped into decoders.
    """
    located = [c for c in action_space if c.kind == "location"]
    heads = [UpsamplingHead(hidden, c.grid_size, location_channels) if c.kind == "location"
             else nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, c.size))
             for c in action_space]
    embeddings = [nn.Embedding(c.size, embedding) for c in action_space]
    updates = [nn.Linear(embedding, hidden) for _ in action_space]
    readouts = {c.name: nn.Linear(width, hidden) for c in located} if location_decoder != "paper" else {}
    spatial = {c.name: SpatialHead(width, hidden) for c in located} if location_decoder == "spatial" else {}
    decoders = {}
    for component, head, embedded, update in zip(action_space, heads, embeddings, updates):
        parts = (component, head, embedded, update)
        if component.name in spatial:
            decoders[component.name] = SpatialDecoder(*parts, readouts[component.name], spatial[component.name])
        elif component.name in readouts:
            decoders[component.name] = ReadoutDecoder(*parts, readouts[component.name])
        else:
            decoders[component.name] = ComponentDecoder(*parts)
    return nn.ModuleDict(decoders)
