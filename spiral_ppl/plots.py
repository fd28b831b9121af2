"""Pictures of inference: l2 against renderer calls, and reconstruction grids.

Everything returns a matplotlib ``Figure`` (the Agg backend is fine headless) and, given a
path, saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from spiral_ppl.inference.result import Result  # noqa: E402


def _save(figure, path: str | Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def plot_curves(
    results: Mapping[str, Result],
    path: str | Path | None = None,
    title: str = "",
    blank_l2: float | None = None,
):
    """Mean best l2 so far against renders per target, one line per engine (log-log).

    ``blank_l2``, the l2 of an empty canvas, is drawn as a dashed line for reference.
    """
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        curve = result.curve
        axes.plot(curve.renders.cpu().numpy(), curve.mean().cpu().numpy(), label=name, linewidth=2)
    if blank_l2 is not None:
        axes.axhline(blank_l2, color="grey", linestyle="--", linewidth=1, label="blank canvas")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("renderer calls per target")
    axes.set_ylabel("best mean squared pixel error so far")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    return _save(figure, path)


def _as_picture(image: torch.Tensor):
    image = image.detach().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def reconstruction_grid(
    targets: torch.Tensor, reconstructions: Mapping[str, torch.Tensor], path: str | Path | None = None
):
    """Targets in the first row, then one row of reconstructions per engine."""
    rows = {"target": targets, **reconstructions}
    columns = targets.shape[0]
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns, 1.25 * len(rows)), squeeze=False)
    for row, (name, images) in enumerate(rows.items()):
        for column in range(columns):
            ax = axes[row, column]
            ax.imshow(_as_picture(images[column]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(figure, path)
