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

from typing import Mapping, Sequence

import numpy as np
import torch


def resample_path(points: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """Points evenly spaced by arc length along a polyline ``(N, 2)`` (at least its ends)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    if len(points) < 2:
        return points.copy()
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    if arc[-1] == 0:
        return points[:1].copy()
    count = max(2, int(np.ceil(arc[-1] / spacing)) + 1)
    targets = np.linspace(0, arc[-1], count)
    return np.stack([np.interp(targets, arc, points[:, 0]), np.interp(targets, arc, points[:, 1])], axis=1)


def chamfer_distance(paths_a: Sequence[np.ndarray], paths_b: Sequence[np.ndarray], spacing: float = 0.5) -> float:
    """Symmetric Chamfer distance between two sets of pen paths (see the module docstring)."""
    if not len(paths_a) or not len(paths_b):
        raise ValueError("both drawings need at least one path to compare")
    a = np.concatenate([resample_path(path, spacing) for path in paths_a])
    b = np.concatenate([resample_path(path, spacing) for path in paths_b])
    distances = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return float(0.5 * (distances.min(1).mean() + distances.min(0).mean()))


def pen_paths(renderer, actions: Mapping[str, torch.Tensor], points_per_step: int = 32) -> list[np.ndarray]:
    """The pen paths of one paint program ``{name: LongTensor[T]}`` in canvas pixels.

    Works for renderers with the paper's paint action space (``flag``, ``end_point``,
    ``control_point``) and a ``grid_to_pixels`` method, such as the Brush. Consecutive
    drawing steps join into one path; a jump ends it.
    """
    for name in ("flag", "end_point", "control_point"):
        if name not in actions:
            raise ValueError(f"pen_paths needs a paint program with a {name!r} component")
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
    return {
        "inferred_strokes": len(inferred),
        "true_strokes": len(truth),
        "stroke_count_error": abs(len(inferred) - len(truth)),
        "chamfer": chamfer_distance(inferred, truth) if len(inferred) else float("inf"),
    }
