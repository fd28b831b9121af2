"""Pictures of inference and training: l2 against renderer calls, reconstruction grids,
stroke decompositions and training curves.

Everything returns a matplotlib ``Figure`` (shown inline in a notebook; matplotlib falls back
to its Agg backend without a display) and, given a path, saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from spiral_ppl import checks
from spiral_ppl.inference.result import Result


def _save(figure, path: str | Path | None):
    if path is not None:
        path = checks.path("path", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def plot_curves(
    results: Mapping[str, Result],
    path: str | Path | None = None,
    title: str = "",
    blank_l2: float | None = None,
    budgets: Mapping[str, tuple[list[float], list[float]]] | None = None,
):
    """Mean best l2 so far against renders per target, one colour per engine (log-log).

    :param results: each engine's :class:`Result`; its ``curve`` is drawn as a line.
    :param blank_l2: the l2 of an empty canvas, drawn as a dashed line for reference.
    :param budgets: per engine, ``(renders, mean l2)`` of separate runs at several budgets,
        drawn as markers joined by a dotted line (engines such as SMC, whose result exists
        only at the end of a run, have a curve of a single point).
    """
    checks.mapping("results", results, example="{'smc': result} (engine name: Result)")
    if not results:
        raise ValueError("results is empty: give {engine name: Result} of at least one run")
    for name, result in results.items():
        if not isinstance(result, Result):
            raise TypeError(f"results[{name!r}] must be an engine's Result, got {type(result).__name__}")
    if path is not None:
        checks.path("path", path)
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for index, (name, result) in enumerate(results.items()):
        colour = f"C{index}"
        curve = result.curve
        axes.plot(curve.renders.cpu().numpy(), curve.mean().cpu().numpy(), color=colour, linewidth=2,
                  marker="o" if len(curve.renders) < 3 else None, label=name)
        if budgets and name in budgets:
            renders, l2 = budgets[name]
            axes.plot(renders, l2, color=colour, linestyle=":", marker="o", markersize=5)
    if blank_l2 is not None:
        axes.axhline(blank_l2, color="grey", linestyle="--", linewidth=1, label="blank canvas")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("renderer calls per target")
    axes.set_ylabel("best mean squared pixel error so far")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    return _save(figure, path)


def _check_pictures(name: str, images: Any) -> None:
    """Images to draw: a non-empty float tensor ``(B, C, H, W)`` with 1 or 3 channels."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of images (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        hint = " (add a batch dimension with images[None])" if images.dim() == 3 else ""
        raise ValueError(f"{name} must be a non-empty batch of images (B, 1 or 3, H, W), got {tuple(images.shape)}"
                         + hint)
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float images in [0, 1], got dtype {images.dtype}; "
                        "for uint8 pixels use images.float() / 255")


def _check_programs(prog: Any, actions: Any) -> None:
    """A program and a batch of its programs ``{name: LongTensor[B, T]}``, to draw step by step."""
    from spiral_ppl.programs.base import Program
    from spiral_ppl.renderers.base import validate_actions

    if not isinstance(prog, Program):
        raise TypeError(f"prog must be a spiral_ppl.programs.Program (for a renderer, wrap it in "
                        f"sp.programs.RendererProgram), got {type(prog).__name__}")
    shape = validate_actions(prog.action_space, actions, ndim=2)
    if shape[1] > prog.steps:
        raise ValueError(f"this program has {prog.steps} steps, got actions for {shape[1]}")


def _as_picture(image: torch.Tensor):
    image = image.detach().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def reconstruction_grid(
    targets: torch.Tensor, reconstructions: Mapping[str, torch.Tensor], path: str | Path | None = None
):
    """Targets in the first row, then one row of reconstructions per engine."""
    checks.mapping("reconstructions", reconstructions, example="{'smc': result.images}")
    rows = {"target": targets, **reconstructions}
    for name, images in rows.items():
        _check_pictures("targets" if name == "target" else f"reconstructions[{name!r}]", images)
        if images.shape[0] < targets.shape[0]:
            raise ValueError(f"reconstructions[{name!r}] has {images.shape[0]} images for {targets.shape[0]} targets; "
                             "give one per target")
    if path is not None:
        checks.path("path", path)
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


def stroke_colours(prog, actions: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each program's canvas with every step's marks in a colour of their own: ``(B, 3, H, W)``.

    Works for any program through its step-wise protocol (``prog.stepwise``): a pixel takes
    the colour of the last step that changed it, at the brightness of the final canvas (the
    paper's Figure 6d). Each program's canvas after each step is one render (``prog.meter``).
    """
    _check_programs(prog, actions)
    names = list(actions)
    batch, steps = actions[names[0]].shape
    palette = torch.tensor(plt.get_cmap("tab20").colors, dtype=torch.float32)
    device = actions[names[0]].device
    stepwise = prog.stepwise
    state = stepwise.initial(batch, device=device)
    previous = prog.blank_canvas(batch, device=device)
    owner = torch.full((batch, *previous.shape[-2:]), -1, dtype=torch.long)
    for t in range(steps):
        state = stepwise.advance(state, {name: value[:, t] for name, value in actions.items()})
        canvas = stepwise.canvas(state)
        changed = (canvas - previous).abs().sum(1).cpu() > 1e-3
        owner[changed] = t
        previous = canvas
    brightness = previous.detach().cpu().abs().amax(1, keepdim=True).clamp(0, 1)
    colours = palette[owner.clamp(min=0) % len(palette)].permute(0, 3, 1, 2)
    return torch.where(owner[:, None] >= 0, colours * brightness.clamp(min=0.35), torch.zeros_like(colours))


def stroke_decomposition(prog, actions: Mapping[str, torch.Tensor], path: str | Path | None = None, columns: int = 8):
    """A row of programs drawn with one colour per step (see :func:`stroke_colours`)."""
    checks.positive_int("columns", columns)
    if path is not None:
        checks.path("path", path)
    pictures = stroke_colours(prog, actions)
    count = pictures.shape[0]
    columns = min(columns, count)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < count:
            ax.imshow(_as_picture(pictures[index]), interpolation="nearest")
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(figure, path)


def high_resolution(renderer, actions: Mapping[str, torch.Tensor], scale: int = 4, path: str | Path | None = None):
    """The same programs at their own resolution and re-rendered ``scale`` times larger (Figure 6c).

    ``renderer`` must offer ``with_canvas_size`` (the Brush does).
    """
    if not hasattr(renderer, "with_canvas_size"):
        raise ValueError(f"{type(renderer).__name__} cannot re-render at another resolution (no with_canvas_size)"
                         + ("; pass the program's renderer, prog.renderer" if hasattr(renderer, "renderer") else ""))
    checks.positive_int("scale", scale, hint="how many times larger to re-render")
    if path is not None:
        checks.path("path", path)
    low = renderer.render(actions)
    high = renderer.with_canvas_size(renderer.image_size * scale).render(actions)
    count = low.shape[0]
    figure, axes = plt.subplots(2, count, figsize=(2.2 * count, 4.6), squeeze=False)
    for column in range(count):
        for row, images in enumerate((low, high)):
            ax = axes[row, column]
            ax.imshow(_as_picture(images[column]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel(f"{low.shape[-1]}px")
    axes[1, 0].set_ylabel(f"{high.shape[-1]}px")
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(figure, path)


def training_curve(
    points: list[tuple],
    path: str | Path | None = None,
    *,
    baselines: Mapping[str, float] | None = None,
    title: str = "",
    xlabel: str = "training time (minutes)",
    ylabel: str = "held-out l2, one pass",
    log_scale: bool = False,
):
    """Held-out l2 of an agent against training time, one colour per training phase.

    :param points: ``(seconds, update, l2)`` or ``(seconds, update, l2, phase)`` in the
        order they were measured. Each phase's line starts at the last point before it, so
        a run's phases (behaviour cloning, then A2C, say) join into one curve.
    :param baselines: ``{label: l2}`` drawn as horizontal lines (a blank canvas, a search
        engine at some budget).
    """
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise TypeError(f"points must be a list of (seconds, update, l2[, phase]) tuples, got {type(points).__name__}")
    if not points:
        raise ValueError("no points to plot: give (seconds, update, l2[, phase]) tuples")
    short = [point for point in points if not isinstance(point, Sequence) or len(point) < 3]
    if short:
        raise ValueError(f"each point must be (seconds, update, l2[, phase]); got {short[0]!r}")
    phases = [point[3] if len(point) > 3 else "training" for point in points]
    figure, axes = plt.subplots(figsize=(6, 4))
    for index, phase in enumerate(dict.fromkeys(phases)):
        members = [i for i, name in enumerate(phases) if name == phase]
        if members[0] > 0:
            members.insert(0, members[0] - 1)
        axes.plot([points[i][0] / 60 for i in members], [points[i][2] for i in members], marker="o",
                  linewidth=2, color=f"C{index}", label=phase)
    for index, (label, value) in enumerate((baselines or {}).items()):
        axes.axhline(value, color="grey", linestyle=("--", ":", "-.")[index % 3], linewidth=1, label=label)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    return _save(figure, path)


def plot_population(history: list[Mapping[str, float]], path: str | Path | None = None):
    """Population-based training at a glance: fitness, entropy cost and policy learning rate
    of every member against updates (a jump in a member's hyper-parameters is an exploit).

    :param history: rows ``{member, update, fitness, entropy_cost, policy_lr}``, as
        :class:`~spiral_ppl.inference.spiral.pbt.Population` keeps them.
    """
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise TypeError(f"history must be a list of rows {{member, update, fitness, entropy_cost, policy_lr}}, "
                        f"got {type(history).__name__}")
    if not history:
        raise ValueError("the population history is empty: nothing to plot")
    needed = ("member", "update", "fitness", "entropy_cost", "policy_lr")
    bad = [row for row in history if not isinstance(row, Mapping) or any(key not in row for key in needed)]
    if bad:
        raise ValueError(f"each history row must be a dict with {list(needed)}, got {bad[0]!r}")
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    members = sorted({int(row["member"]) for row in history})
    for member in members:
        rows = sorted((row for row in history if int(row["member"]) == member), key=lambda row: row["update"])
        updates = [row["update"] for row in rows]
        for axis, key in zip(axes, ("fitness", "entropy_cost", "policy_lr")):
            axis.plot(updates, [row[key] for row in rows], marker="o", markersize=3, color=f"C{member % 10}",
                      label=f"member {member}")
    for axis, label in zip(axes, ("fitness", "entropy cost", "policy learning rate")):
        axis.set_xlabel("updates")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    for axis in axes[1:]:
        axis.set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)
