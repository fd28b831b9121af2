"""Draw a grid of MUJOCO SCENES samples, captioned with their objects, to docs/mujoco_scenes.png.

Run: ``.venv/bin/python examples/mujoco_scenes_figure.py [output.png]``
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import spiral_ppl as sp  # noqa: E402
from spiral_ppl.renderers.mujoco_scene import ADD, SHAPES  # noqa: E402

ROWS, COLUMNS = 4, 6


def main(output: Path) -> None:
    scenes = sp.data.MujocoScenes(root=tempfile.mkdtemp(), size=ROWS * COLUMNS, seed=0, progress=False)
    figure, axes = plt.subplots(ROWS, COLUMNS, figsize=(COLUMNS * 1.6, ROWS * 1.75))
    for index, axis in enumerate(axes.flat):
        image, actions = scenes[index]
        placed = actions["command"] == ADD
        shapes = ", ".join(SHAPES[int(s)][:3] for s in actions["shape"][placed])
        axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(f"{int(placed.sum())}: {shapes}", fontsize=6.5)
        axis.axis("off")
    figure.suptitle("MUJOCO SCENES (seed 0): 64x64 renders, 1 to 5 objects", fontsize=9)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=130)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "mujoco_scenes.png")
