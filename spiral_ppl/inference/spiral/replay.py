"""The replay buffer between the agent and the critic.

The agent's final renders (with their targets, for a conditional agent) are kept for the
last ``capacity`` batches; the critic trains on uniform draws from them, so it sees a
slowly moving mixture of recent policies rather than only the latest batch (20 batches in
Ganin et al. 2018, where the buffer also decouples the actors from the learner).

Example::

    >>> import torch
    >>> buffer = ReplayBuffer(capacity=2)
    >>> for value in range(3):
    ...     buffer.add(torch.full((4, 1, 2, 2), float(value)))
    >>> len(buffer), sorted(buffer.sample(8)[0].unique().tolist())  # the oldest batch is gone
    (8, [1.0, 2.0])
"""

from __future__ import annotations

from typing import Any

import torch

from spiral_ppl import checks


class ReplayBuffer:
    """A first-in-first-out store of the last ``capacity`` batches of renders.

    :param capacity: number of batches kept.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = checks.positive_int("capacity", capacity, hint="batches kept")
        self.batches: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def __len__(self) -> int:
        """Number of images held."""
        return sum(images.shape[0] for images, _ in self.batches)

    def add(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        """Store one batch (detached); drop the oldest beyond the capacity."""
        self.batches.append((images.detach(), None if targets is None else targets.detach()))
        del self.batches[: -self.capacity]

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` images (and their targets) drawn uniformly with replacement."""
        if not self.batches:
            raise RuntimeError("the replay buffer is empty; add a batch of renders first")
        images = torch.cat([images for images, _ in self.batches])
        index = torch.randint(images.shape[0], (count,), device=images.device)
        if self.batches[0][1] is None:
            return images[index], None
        return images[index], torch.cat([targets for _, targets in self.batches])[index]

    def state_dict(self) -> dict[str, Any]:
        batches = [(images.cpu(), None if targets is None else targets.cpu()) for images, targets in self.batches]
        return {"capacity": self.capacity, "batches": batches}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.capacity = state["capacity"]
        self.batches = [(i.to(device), None if t is None else t.to(device)) for i, t in state["batches"]]
