"""The whole random state a run depends on: torch (CPU and CUDA), numpy and Python's ``random``.

``pyro.set_rng_seed`` reseeds all of them, so an engine run with ``seed=`` saves and
restores all of them (:func:`preserved_random_state`); a SPIRAL checkpoint stores them so
that training resumes exactly (:func:`random_state`, :func:`set_random_state`).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


def random_state() -> dict[str, Any]:
    """Every generator's state, as tensors and lists that ``torch.load(weights_only=True)`` reads back."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Put back a state from :func:`random_state` (CUDA's only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block and put every random generator back as it was before it."""
    state = random_state()
    try:
        yield
    finally:
        set_random_state(state)
