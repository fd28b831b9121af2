"""A user's own grammar module, as ``--program tests.custom_grammar_module:FACTORY`` names it.

:func:`make_squares` makes a :class:`~spiral_ppl.programs.Program` subclass (the Squares of
``spiral_ppl/programs/base.py``), :func:`make_dots` a plain Pyro model (the dots of
``spiral_ppl/programs/pyro_program.py``), and :func:`make_discs` the Discs of
``tests/grammars.py``; the rest are the mistakes a user makes.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

import spiral_ppl as sp
from spiral_ppl.renderers import Component
from tests.grammars import Discs


class Squares(sp.programs.Program):
    """Up to ``steps`` white 2x2 squares on an 8x8 canvas."""

    channels, image_size = 1, 8
    action_space = (Component("corner", 16, "location"), Component("present", 2))

    def draw(self, actions):
        corner, present = actions["corner"], actions["present"].float()
        rows = torch.arange(8)
        y, x = (corner // 4 * 2)[..., None], (corner % 4 * 2)[..., None]
        inside_y = ((rows >= y) & (rows < y + 2)).float() * present[..., None]
        inside_x = ((rows >= x) & (rows < x + 2)).float()
        return torch.einsum("bty,btx->byx", inside_y, inside_x).clamp(max=1)[:, None]


def make_squares(steps=2, pixel_scale=0.5):
    """The grammar a configuration or a program file names: its options are these keywords."""
    return Squares(steps=steps, pixel_scale=pixel_scale)


def make_dots(steps=2, side=4):
    """A plain Pyro model of ``steps`` dots on a ``side`` x ``side`` canvas (wrapped into a PyroProgram)."""

    def dots(image=None, batch_size=1, steps=steps):
        batch_size = image.shape[0] if image is not None else batch_size
        canvas = torch.zeros(batch_size, 1, side, side)
        with pyro.plate("targets", batch_size):
            for t in range(steps):
                cell = pyro.sample(f"step_{t}/cell", dist.Categorical(logits=torch.zeros(side * side)),
                                   infer={"location": (side, side)})
                canvas = canvas.flatten(1).scatter(1, cell[:, None], 1.0).view(-1, 1, side, side)
            pyro.sample("image", dist.Normal(canvas, 0.5).to_event(3), obs=image)
        return canvas

    return dots


def make_discs(steps=2):
    return Discs(steps=steps)


# -- mistakes ---------------------------------------------------------------------------------------------


def broken(steps=2):
    raise RuntimeError("the grammar needs a palette")


def not_a_program():
    return {"steps": 2}


NOT_CALLABLE = 3


#: A Pyro model itself, where a factory that returns it belongs.
dots = make_dots()
