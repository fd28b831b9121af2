"""Helpers shared by the paint tests: programs from step lists, exact distances, planted recovery."""

import numpy as np
import torch


def program(renderer, steps):
    """Actions ``{name: LongTensor[1, T]}`` from a list of per-step dicts (missing -> 0)."""
    return {c.name: torch.tensor([[step.get(c.name, 0) for step in steps]]) for c in renderer.action_space}


def cell(renderer, x, y):
    """Flat grid index of grid point ``(x, y)``."""
    return y * renderer.grid_size + x


def random_programs(renderer, batch, steps, seed):
    """Uniformly random programs ``{name: LongTensor[batch, steps]}``."""
    generator = torch.Generator().manual_seed(seed)
    return {c.name: torch.randint(0, c.size, (batch, steps), generator=generator) for c in renderer.action_space}


def distance_to_bezier(start, control, end, size):
    """Brute-force distance of every pixel centre to a densely sampled quadratic Bezier."""
    tau = np.linspace(0, 1, 20001)[:, None]
    curve = (1 - tau) ** 2 * start + 2 * (1 - tau) * tau * control + tau**2 * end
    ys, xs = np.mgrid[0:size, 0:size]
    pixels = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    distances = np.full(len(pixels), np.inf)
    for chunk in np.array_split(np.arange(len(pixels)), 8):
        diff = pixels[chunk, None, :] - curve[None]
        distances[chunk] = np.sqrt((diff**2).sum(-1)).min(-1)
    return distances.reshape(size, size)


def one_stroke(renderer, start_cell, control_cell, end_cell, brush_size, pressure):
    """Render a jump to ``start_cell`` then one stroke; return the image and every pixel's
    exact distance to the stroke's Bezier curve (both ``(H, W)`` numpy arrays)."""
    steps = [
        {"flag": 0, "end_point": cell(renderer, *start_cell)},
        {"flag": 1, "end_point": cell(renderer, *end_cell), "control_point": cell(renderer, *control_cell),
         "brush_size": brush_size, "pressure": pressure},
    ]
    image = renderer.render(program(renderer, steps))[0, 0].numpy()
    spacing = (renderer.canvas_size - 1) / (renderer.grid_size - 1)
    start, control, end = (np.array(p, dtype=np.float64) * spacing for p in (start_cell, control_cell, end_cell))
    midpoint = np.round((start + 2 * control + end) / 4).astype(int)  # B(1/2), on the curve
    return image, distance_to_bezier(start, control, end, renderer.canvas_size), midpoint


def check_recovers_planted(engine, prog, images, renders):
    """Run ``engine`` on planted targets with ``renders`` per target and return its result,
    after checking that it spends exactly that, reports a program that draws its images and
    their l2, and beats the best of as many random programs (l2 under a quarter of a blank
    canvas's, where the random ones stay above 0.3)."""
    import spiral_ppl as sp

    blank = images.pow(2).flatten(1).mean(1)
    result = engine.infer(prog, images, sp.Budget(renders=renders), seed=0)
    assert result.renders.tolist() == [renders] * images.shape[0]
    assert torch.allclose(prog.draw(result.actions), result.images)
    assert torch.allclose(sp.programs.mean_squared_error(result.images, images), result.l2)
    random = sp.inference.Importance().infer(prog, images, sp.Budget(renders=renders), seed=0)
    assert float((random.l2 / blank).mean()) > 0.3
    assert float((result.l2 / blank).mean()) < 0.25
    return result


def three_planted_strokes(seed=1):
    """The search defaults' test task (``benchmarks/search_defaults.py``, test seed 1): a 16x16
    paint program (grid 8, every size and pressure), four targets of three inked strokes drawn
    from its prior with ``seed``; returns the program, the targets and their blank-canvas l2."""
    import spiral_ppl as sp

    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=8, compile=False), steps=3)
    actions = prog.sample_prior(4, generator=torch.Generator().manual_seed(seed))
    actions["flag"].fill_(1)
    images = prog.render(actions)
    return prog, images, images.pow(2).flatten(1).mean(1)


def worst_total_variation(samples, exact, prog):
    """The largest total variation, over the sites of ``prog`` and the targets, between the
    marginals of ``samples`` (``{site: (S, chains, B)}`` values, pooled over the first two
    axes) and ``exact.marginals`` (``{site: (B, K)}``, from ``enumerate_posterior``)."""
    worst = 0.0
    for name in prog.site_names():
        probs = exact.marginals[name]  # (B, K)
        empirical = torch.nn.functional.one_hot(samples[name].long(), probs.shape[-1]).float().mean((0, 1))
        worst = max(worst, float(0.5 * (empirical - probs).abs().sum(-1).max()))
    return worst
