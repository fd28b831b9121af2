"""Batched episodes of a policy on a program, through the program's step-wise protocol.

An episode of a ``T``-step program starts from an empty canvas. Before the first action
the agent sees a canvas of zeros ("nothing drawn yet"; no renderer call); after each
action the program advances its state and, where the agent needs to see it, draws the new
canvas with :meth:`~spiral_ppl.programs.Stepwise.canvas`, which counts one render per
canvas. A sighted agent therefore spends ``T`` renders per episode (the last canvas is the
result), a blind one ``1``. The whole batch moves in lock-step on the policy's device;
renderers that draw on the CPU (MuJoCo) are called as they are.

Example::

    >>> import torch, spiral_ppl as sp
    >>> from spiral_ppl.inference.spiral import Policy, SpiralConfig
    >>> prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=8), steps=3)
    >>> policy = Policy(prog.action_space, 1, 16, conditional=True, config=SpiralConfig.small())
    >>> before = prog.renders
    >>> episode = rollout(policy, prog, 5, targets=torch.zeros(5, 1, 16, 16))
    >>> episode.actions["end_point"].shape, episode.final.shape, prog.renders - before
    (torch.Size([5, 3]), torch.Size([5, 1, 16, 16]), 15)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from spiral_ppl.inference.spiral.policy import Policy, sample_categorical
from spiral_ppl.programs.base import Program
from spiral_ppl.renderers.base import Component

#: ``choose(step, component, logits) -> LongTensor``: picks the value of one component.
StepChooser = Callable[[int, Component, torch.Tensor], torch.Tensor]


def _sample(step: int, component: Component, logits: torch.Tensor) -> torch.Tensor:
    return sample_categorical(component, logits)


def most_probable(step: int, component: Component, logits: torch.Tensor) -> torch.Tensor:
    """A :data:`StepChooser` that takes each component's most probable value (greedy decoding)."""
    return logits.argmax(-1)


class Episode(NamedTuple):
    """A batch of ``B`` episodes of ``T`` steps."""

    actions: dict[str, torch.Tensor]  # {name: LongTensor[B, T]}, what prog.render takes
    log_probs: torch.Tensor  # (B, T)
    entropies: torch.Tensor  # (B, T)
    values: torch.Tensor  # (B, T)
    canvases: list[torch.Tensor | None]  # x_1 .. x_T, None where not drawn
    final: torch.Tensor | None  # x_T, (B, C, H, W), None if not drawn
    noise: torch.Tensor | None = None  # (B, noise_size) of an unconditional policy
    hidden: tuple[torch.Tensor, torch.Tensor] | None = None  # the LSTM state after the last step


def _episode(outputs: list, canvases: list[torch.Tensor | None], noise: torch.Tensor | None) -> Episode:
    """Stack the policy's step outputs into an :class:`Episode`."""
    return Episode(
        actions={name: torch.stack([out.action[name] for out in outputs], dim=1) for name in outputs[0].action},
        log_probs=torch.stack([out.log_prob for out in outputs], dim=1),
        entropies=torch.stack([out.entropy for out in outputs], dim=1),
        values=torch.stack([out.value for out in outputs], dim=1),
        canvases=canvases,
        final=canvases[-1],
        noise=noise,
        hidden=outputs[-1].hidden,
    )


def rollout(
    policy: Policy,
    prog: Program,
    batch: int,
    targets: torch.Tensor | None = None,
    *,
    blind: bool = False,
    observe_all: bool = False,
    draw_final: bool = True,
    choose: StepChooser = _sample,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
) -> Episode:
    """Run ``batch`` episodes of ``policy`` on ``prog``.

    :param targets: ``(batch, C, H, W)`` targets of a conditional policy, else ``None``.
    :param blind: the policy sees the zero canvas at every step and intermediate canvases are
        not drawn (unless ``observe_all``).
    :param observe_all: draw every intermediate canvas even when blind (temporal rewards).
    :param draw_final: draw the last canvas (the Pyro guide leaves that to the model).
    :param choose: how each component is picked (sampling by default).
    :param temperature: of the policy's distributions (see :meth:`Policy.step`).
    """
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    shape = (batch, prog.channels, prog.image_size, prog.image_size)
    nothing_drawn = torch.zeros(shape, device=device)
    noise = torch.randn(batch, policy.noise_size, device=device) if policy.noise_size else None
    hidden = policy.initial_hidden(batch, device)
    stepwise = prog.stepwise
    state = stepwise.initial(batch, device=device)
    seen, previous = nothing_drawn, None
    fixed = policy.fixed_features(targets, batch, device)
    outputs, canvases = [], []
    for t in range(prog.steps):
        out = policy.step(seen, targets, previous, noise, hidden, choose=lambda c, logits: choose(t, c, logits),
                          temperature=temperature, fixed=fixed)
        state = stepwise.advance(state, out.action)
        last = t == prog.steps - 1
        canvas = None
        if (last and draw_final) or (not last and (observe_all or not blind)):
            canvas = stepwise.canvas(state).to(device)
        canvases.append(canvas)
        if not blind and canvas is not None:
            seen = canvas
        previous, hidden = out.action, out.hidden
        outputs.append(out)
    return _episode(outputs, canvases, noise)


def replay(
    policy: Policy,
    actions: dict[str, torch.Tensor],
    canvases: list[torch.Tensor | None],
    targets: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    *,
    blind: bool = False,
    labels: dict[str, torch.Tensor] | None = None,
) -> Episode:
    """Score recorded episodes under the current weights of ``policy``, without rendering.

    A rollout worker sends the actions it chose and the canvases it drew; the learner
    feeds the same observations to its own (newer) weights, action by action, to get the
    log-probabilities, entropies and values that its loss differentiates. The canvases are
    reused, so the renderer runs only on the workers.

    :param actions: ``{name: LongTensor[B, T]}`` the actions taken.
    :param canvases: ``x_1 .. x_T`` as :func:`rollout` returned them (``None`` where not drawn).
    :param noise: the noise an unconditional policy was given.
    :param labels: ``{name: LongTensor[B, T]}`` to score instead of the actions taken, in the
        states those actions reached (DAgger: an expert's corrections of the policy's own
        episodes). The returned episode's ``actions`` are then the labels.
    """
    batch, steps = next(iter(actions.values())).shape
    if len(canvases) != steps:
        raise ValueError(f"replay needs one canvas entry per step ({steps}), got {len(canvases)}")
    device = next(policy.parameters()).device
    canvases = [None if canvas is None else canvas.to(device) for canvas in canvases]
    first = next((c for c in canvases if c is not None), None)
    if first is None:
        raise ValueError("replay needs at least the final canvas of the episodes; none was drawn")
    seen = torch.zeros(batch, *first.shape[1:], device=device)
    hidden, previous = policy.initial_hidden(batch, device), None
    fixed = policy.fixed_features(targets, batch, device)
    outputs = []
    for t in range(steps):
        taken = {name: value[:, t].to(device) for name, value in actions.items()}
        scored = taken if labels is None else {name: value[:, t].to(device) for name, value in labels.items()}
        out = policy.step(seen, targets, previous, noise, hidden, choose=lambda c, logits: scored[c.name],
                          fixed=fixed)
        if not blind and canvases[t] is not None:
            seen = canvases[t]
        previous, hidden = taken, out.hidden
        outputs.append(out)
    return _episode(outputs, canvases, noise)
