"""Helpers shared by the paint-renderer tests: programs from step lists, exact distances."""

import numpy as np
import torch


def program(renderer, steps):
    """Actions ``{name: LongTensor[1, T]}`` from a list of per-step dicts (missing -> 0)."""
    return {c.name: torch.tensor([[step.get(c.name, 0) for step in steps]]) for c in renderer.action_space}


def cell(renderer, x, y):
    """Flat grid index of grid point ``(x, y)``."""
    return y * renderer.grid_size + x


def random_programs(renderer, batch, steps, seed):
    """Uniformly random programs ``{name: LongTensor[batch, steps]}``."""
    generator = torch.Generator().manual_seed(seed)
    return {c.name: torch.randint(0, c.size, (batch, steps), generator=generator) for c in renderer.action_space}


def distance_to_bezier(start, control, end, size):
    """Brute-force distance of every pixel centre to a densely sampled quadratic Bezier."""
    tau = np.linspace(0, 1, 20001)[:, None]
    curve = (1 - tau) ** 2 * start + 2 * (1 - tau) * tau * control + tau**2 * end
    ys, xs = np.mgrid[0:size, 0:size]
    pixels = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    distances = np.full(len(pixels), np.inf)
    for chunk in np.array_split(np.arange(len(pixels)), 8):
        diff = pixels[chunk, None, :] - curve[None]
        distances[chunk] = np.sqrt((diff**2).sum(-1)).min(-1)
    return distances.reshape(size, size)
