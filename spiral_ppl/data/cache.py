"""Where datasets live on disk when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path


def default_root(name: str) -> Path:
    """``$SPIRAL_PPL_DATA/name`` when that variable is set, else ``~/.cache/spiral_ppl/name``.

    ``XDG_CACHE_HOME`` moves the per-user cache as usual.
    """
    shared = os.environ.get("SPIRAL_PPL_DATA")
    if shared:
        return Path(shared) / name
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "spiral_ppl" / name
