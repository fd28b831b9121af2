r"""How well an inferred stroke program parses a drawing: stroke counts and Chamfer distance.

A painting program and a person's drawing are both sets of pen paths. We compare them by

- the number of strokes: for a program, each maximal run of drawing steps is one stroke
  (the pen stays down from one step to the next); a jump lifts it;
- the symmetric Chamfer distance between the two sets of paths, each resampled at even
  arc length: with point sets :math:`A` and :math:`B`,

  .. math::

      d(A, B) = \tfrac12 \Big( \frac{1}{|A|} \sum_{a \in A} \min_{b \in B} \|a - b\|
                + \frac{1}{|B|} \sum_{b \in B} \min_{a \in A} \|a - b\| \Big),

  in pixels of the canvas.

Example::

    >>> import numpy as np
    >>> square = [np.array([[0.0, 0.0], [4.0, 0.0]])]
    >>> chamfer_distance(square, [np.array([[0.0, 1.0], [4.0, 1.0]])])
    1.0
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from spiral_ppl import checks

#: Rows of the pairwise distance matrix computed at once by :func:`chamfer_distance`.
DISTANCE_ROWS = 4096


def resample_path(points: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """Points evenly spaced by arc length along a polyline ``(N, 2)`` (at least its ends)."""
    checks.positive_number("spacing", spacing, hint="pixels between resampled points")
    points = _path("points", points)
    if len(points) < 2:
        return points.copy()
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    if arc[-1] == 0:
        return points[:1].copy()
    count = max(2, int(np.ceil(arc[-1] / spacing)) + 1)
    checks.fits_in_memory(f"a path {arc[-1]:,.0f} pixels long resampled every {spacing:g} pixels", 4 * 8 * count,
                          remedy="give a larger spacing (the paths are in pixels of the canvas)")
    targets = np.linspace(0, arc[-1], count)
    return np.stack([np.interp(targets, arc, points[:, 0]), np.interp(targets, arc, points[:, 1])], axis=1)


def chamfer_distance(paths_a: Sequence[np.ndarray], paths_b: Sequence[np.ndarray], spacing: float = 0.5) -> float:
    """Symmetric Chamfer distance between two sets of pen paths (see the module docstring)."""
    paths_a, paths_b = _paths("paths_a", paths_a), _paths("paths_b", paths_b)
    if not len(paths_a) or not len(paths_b):
        raise ValueError("both drawings need at least one path to compare")
    a = np.concatenate([resample_path(path, spacing) for path in paths_a])
    b = np.concatenate([resample_path(path, spacing) for path in paths_b])
    # Row blocks of the pairwise distances, so that long paths need no |a| x |b| matrix at once.
    nearest_b = np.empty(len(a))
    nearest_a = np.full(len(b), np.inf)
    for start in range(0, len(a), DISTANCE_ROWS):
        distances = np.linalg.norm(a[start:start + DISTANCE_ROWS, None, :] - b[None, :, :], axis=-1)
        nearest_b[start:start + DISTANCE_ROWS] = distances.min(1)
        nearest_a = np.minimum(nearest_a, distances.min(0))
    return float(0.5 * (nearest_b.mean() + nearest_a.mean()))


def pen_paths(renderer, actions: Mapping[str, torch.Tensor], points_per_step: int = 32) -> list[np.ndarray]:
    """The pen paths of one paint program ``{name: LongTensor[T]}`` in canvas pixels.

    Works for renderers with the paper's paint action space (``flag``, ``end_point``,
    ``control_point``) and a ``grid_to_pixels`` method, such as the Brush. Consecutive
    drawing steps join into one path; a jump ends it.
    """
    from spiral_ppl.renderers.paint import PaintRenderer

    if not isinstance(renderer, PaintRenderer):
        raise TypeError(f"renderer must be a paint renderer such as sp.renderers.Brush (for a program, its "
                        f"prog.renderer), got {type(renderer).__name__}")
    checks.mapping("actions", actions, example="{'flag': LongTensor[T], 'end_point': ..., 'control_point': ...}")
    if not isinstance(points_per_step, int) or isinstance(points_per_step, bool) or points_per_step < 2:
        raise ValueError(f"points_per_step must be an int of at least 2 (the ends of each stroke), "
                         f"got {points_per_step!r}")
    for name in ("flag", "end_point", "control_point"):
        if name not in actions:
            raise ValueError(f"pen_paths needs a paint program with a {name!r} component")
    space = {component.name: component for component in renderer.action_space}
    for name in ("flag", "end_point", "control_point"):
        value = actions[name]
        if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.dtype == torch.bool:
            found = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"action {name!r} must be an integer tensor (torch.long), got {found}")
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= space[name].size):
            raise ValueError(f"action {name!r} must lie in [0, {space[name].size - 1}] for this renderer, "
                             f"got values in [{int(value.min())}, {int(value.max())}]")
    if actions["flag"].numel() != actions["flag"].shape[-1]:
        raise ValueError(f"pen_paths takes one program, (T,) or (1, T) per component; got {tuple(actions['flag'].shape)}")
    flags = actions["flag"].reshape(-1).tolist()
    ends = renderer.grid_to_pixels(actions["end_point"].reshape(-1)).double().numpy()
    controls = renderer.grid_to_pixels(actions["control_point"].reshape(-1)).double().numpy()
    position = renderer.grid_to_pixels(torch.tensor(0)).double().numpy()
    tau = np.linspace(0, 1, points_per_step)[:, None]
    paths, current = [], None
    for flag, control, end in zip(flags, controls, ends):
        if flag:
            curve = (1 - tau) ** 2 * position + 2 * (1 - tau) * tau * control + tau**2 * end
            current = curve if current is None else np.concatenate([current, curve[1:]])
        elif current is not None:
            paths.append(current)
            current = None
        position = end
    if current is not None:
        paths.append(current)
    return paths


def parsing_scores(inferred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> dict[str, float]:
    """Stroke counts and Chamfer distance of inferred pen paths against a person's strokes."""
    inferred, truth = _paths("inferred", inferred), _paths("truth", truth)
    return {
        "inferred_strokes": len(inferred),
        "true_strokes": len(truth),
        "stroke_count_error": abs(len(inferred) - len(truth)),
        "chamfer": chamfer_distance(inferred, truth) if len(inferred) else float("inf"),
    }


def _path(name: str, points: Any) -> np.ndarray:
    """One pen path as a float array ``(N, 2)`` (extra columns, such as pressure, are dropped)."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pen path, an array (N, 2) of pixel coordinates, got {points!r}") from None
    if array.ndim != 2 or array.shape[1] < 2 or not len(array):
        raise ValueError(f"{name} must be a pen path, an array (N, 2) of pixel coordinates, got shape {array.shape}"
                         + ("; a single path goes in a list, [path]" if array.ndim == 1 else ""))
    array = array[:, :2]
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite coordinates")
    return array


def _paths(name: str, paths: Any) -> list[np.ndarray]:
    """A drawing: a list of pen paths, each an array ``(N, 2)``."""
    if isinstance(paths, np.ndarray) or isinstance(paths, torch.Tensor) or not isinstance(paths, Sequence):
        raise TypeError(f"{name} must be a list of pen paths, each an array (N, 2) of pixel coordinates, got "
                        f"{type(paths).__name__}" + ("; a single path goes in a list, [path]"
                                                     if isinstance(paths, (np.ndarray, torch.Tensor)) else ""))
    return [_path(f"{name}[{index}]", path) for index, path in enumerate(paths)]
