"""Scene grammars written as a user would write them, for tests and benchmarks of every engine.

:class:`Discs` is written here, and again as a plain Pyro model (:func:`discs_model`);
:func:`notebook_grammar` reads a grammar out of an example notebook, so that a benchmark
measures the very class the notebook teaches.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import spiral_ppl as sp
from spiral_ppl.renderers import Component

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Discs(sp.programs.Program):
    """Grey discs on a 32x32 canvas: each step may place one (``present``), centred on a cell
    of an 8x8 grid (``centre``), of one of 3 radii and 4 grey levels; later discs cover earlier ones."""

    channels, image_size = 1, 32
    action_space = (
        Component("present", 2),
        Component("centre", 64, "location"),
        Component("radius", 3),
        Component("intensity", 4),
    )
    def draw(self, actions):
        return draw_discs(actions)


class SmallDiscs(Discs):
    """:class:`Discs` seen at 16x16 (each pixel the mean of 2x2 of the 32x32 canvas): the same
    actions on another image size."""

    image_size = 16

    def draw(self, actions):
        return torch.nn.functional.avg_pool2d(draw_discs(actions), 2)


RADII = (3.0, 5.0, 8.0)


class Switches(sp.programs.Program):
    """Lights on a 4x4 canvas, each step switching them on or not: no location and no ordered
    value, so nothing for local or residual moves to move."""

    channels, image_size = 1, 4
    action_space = (Component("on", 2),)

    def draw(self, actions):
        return actions["on"].float().amax(-1).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)


def draw_discs(actions):
    """The canvases ``(N, 1, 32, 32)`` of :class:`Discs` programs ``{name: LongTensor[N, T]}``."""
    device = actions["centre"].device
    pixel = torch.arange(32, device=device, dtype=torch.float32) + 0.5
    cy = (actions["centre"] // 8).float() * 4 + 2
    cx = (actions["centre"] % 8).float() * 4 + 2
    radius = torch.tensor(RADII, device=device)[actions["radius"]]
    distance = (pixel[:, None] - cy[..., None, None]) ** 2 + (pixel[None, :] - cx[..., None, None]) ** 2
    cover = (distance <= radius[..., None, None] ** 2) & (actions["present"][..., None, None] == 1)  # (N, T, H, W)
    return painted_over(cover, (actions["intensity"].float() + 1) / 4)


def discs_model_observed_by(likelihood, name: str):
    """:class:`Discs` of 3 steps written as a plain Pyro model (for :class:`~spiral_ppl.programs.PyroProgram`),
    its canvas observed under ``likelihood(canvas)``."""

    def model(image=None, batch_size=1, steps=3):
        if image is not None:
            batch_size = image.shape[0]
        sizes = {"present": 2, "centre": 64, "radius": 3, "intensity": 4}
        drawn = {name: [] for name in sizes}
        with pyro.plate("targets", batch_size):
            for t in range(steps):
                for name, size in sizes.items():
                    infer = {"location": (8, 8)} if name == "centre" else {}
                    drawn[name].append(pyro.sample(f"step_{t}/{name}", dist.Categorical(logits=torch.zeros(size)),
                                                   infer=infer))
            canvas = draw_discs({name: torch.stack(values, -1) for name, values in drawn.items()})
            pyro.sample("image", likelihood(canvas), obs=image)
        return canvas

    model.__name__ = name
    return model


#: Discs under the library's pixel likelihood, which the program can score from any canvas.
discs_model = discs_model_observed_by(lambda canvas: sp.programs.PixelNormal(canvas, 0.5), "discs_model")
#: Discs under Pyro's own Normal, a likelihood the program can only read from the model's run.
normal_discs = discs_model_observed_by(lambda canvas: dist.Normal(canvas, 0.5).to_event(3), "normal_discs")


def painted_over(cover: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """One-channel images ``(N, 1, H, W)`` of shapes painted in order, later ones over earlier ones.

    :param cover: ``(N, T, H, W)`` whether step ``t``'s shape covers each pixel.
    :param level: ``(N, T)`` the grey level of step ``t``'s shape; pixels no shape covers are 0.
    """
    steps = torch.arange(cover.shape[1], device=cover.device)[None, :, None, None]
    last = torch.where(cover, steps, -1).amax(1)  # the last shape covering each pixel
    values = torch.gather(level[..., None, None].expand_as(cover), 1, last.clamp(min=0)[:, None])[:, 0]
    return torch.where(last >= 0, values, 0.0)[:, None]


def notebook_grammar(notebook: str, name: str) -> type:
    """The class ``name`` as the example notebook ``notebook`` defines it (its defining cell, run alone)."""
    cells = json.loads((EXAMPLES / notebook).read_text())["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and f"class {name}(" in source:
            namespace = {"torch": torch, "sp": sp, "Component": Component}
            definition = source.split("\nprog = ")[0]  # the class, not the cell's use of it
            exec(compile(definition, f"{notebook}:{name}", "exec"), namespace)
            return namespace[name]
    raise LookupError(f"{notebook} defines no class {name}")


def shapes_model(image=None, batch_size=1):
    """A model whose structure varies, run one program at a time: how many shapes (0 to 2) is
    drawn first, then each shape's kind and cell on a 2x2 grid of a 6x6 canvas, and a radius
    only for discs (squares have one size). 157 runs in all, so it can be enumerated."""
    pixel = torch.arange(6, dtype=torch.float32) + 0.5
    canvas = torch.zeros(6, 6)
    count = pyro.sample("count", dist.Categorical(torch.tensor([0.2, 0.4, 0.4])))
    for i in range(int(count)):
        kind = pyro.sample(f"shape_{i}/kind", dist.Categorical(torch.tensor([0.5, 0.5])))
        cell = int(pyro.sample(f"shape_{i}/cell", dist.Categorical(logits=torch.zeros(4))))
        cy, cx = 1.5 + 3 * (cell // 2), 1.5 + 3 * (cell % 2)
        if int(kind) == 1:
            radius = (1.0, 2.0)[int(pyro.sample(f"shape_{i}/radius", dist.Categorical(torch.tensor([0.5, 0.5]))))]
            cover = (pixel[:, None] - cy) ** 2 + (pixel[None, :] - cx) ** 2 <= radius**2
        else:
            cover = ((pixel[:, None] - cy).abs() <= 1) & ((pixel[None, :] - cx).abs() <= 1)
        canvas = torch.where(cover, torch.tensor(1.0), canvas)
    canvas = canvas[None, None]
    pyro.sample("image", dist.Normal(canvas, 0.5).to_event(3), obs=image)
    return canvas


def dots_and_bars(image=None, batch_size=1):
    """A tiny model whose structure varies: up to 2 marks on a 2x2 canvas, each a dot (which
    has a cell) or a bar (which has a row). 43 runs in all, and a broad posterior: a test of
    exactness that a few thousand renders can pass."""
    canvas = torch.zeros(2, 2)
    count = pyro.sample("count", dist.Categorical(torch.tensor([0.3, 0.4, 0.3])))
    for i in range(int(count)):
        if int(pyro.sample(f"mark_{i}/kind", dist.Categorical(torch.tensor([0.6, 0.4])))) == 0:
            cell = int(pyro.sample(f"mark_{i}/cell", dist.Categorical(logits=torch.zeros(4))))
            canvas[cell // 2, cell % 2] = 1.0
        else:
            canvas[int(pyro.sample(f"mark_{i}/row", dist.Categorical(torch.tensor([0.7, 0.3]))))] = 1.0
    canvas = canvas[None, None]
    pyro.sample("image", dist.Normal(canvas, 0.5).to_event(3), obs=image)
    return canvas
