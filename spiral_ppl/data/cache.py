"""Where datasets live on disk when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(name: str) -> Path:
    """The per-user cache folder ``name``, for files the library makes or downloads.

    ``$SPIRAL_PPL_CACHE/name`` when that variable is set, else
    ``$XDG_CACHE_HOME/spiral_ppl/name``, else ``~/.cache/spiral_ppl/name``.
    """
    if os.environ.get("SPIRAL_PPL_CACHE"):
        return Path(os.environ["SPIRAL_PPL_CACHE"]) / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spiral_ppl" / name


def default_root(name: str) -> Path:
    """The folder of a real dataset: ``$SPIRAL_PPL_DATA/name`` when set, else :func:`cache_root`."""
    shared = os.environ.get("SPIRAL_PPL_DATA")
    return Path(shared) / name if shared else cache_root(name)
