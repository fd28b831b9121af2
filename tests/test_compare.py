"""sp.compare: every engine on the same targets and budgets, with its arguments checked."""

import dataclasses

import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.compiling import CompiledWithFallback
from spiral_ppl.renderers import Component


def tiny():
    prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=8, grid_size=3, compile=False), steps=2)
    actions = {c.name: torch.randint(0, c.size, (2, 2), generator=torch.Generator().manual_seed(0))
               for c in prog.action_space}
    return prog, prog.render(actions)


def test_every_engine_gets_every_budget_and_seed():
    prog, targets = tiny()
    engines = {"importance": sp.inference.Importance(), "smc": sp.inference.SMC()}
    table = sp.compare(prog, targets, engines=engines, budgets=[4, 8], seeds=[0, 1])
    assert [(r["engine"], r["budget"]) for r in table.records] == [
        ("importance", 4), ("importance", 8), ("smc", 4), ("smc", 8)]
    assert len(table.results) == 2 * 2 * 2
    run = table.results[("smc", 8, 1)]
    assert run.l2.shape == (2,) and run.renders.tolist() == [8, 8]
    importance = [table.results[("importance", 8, seed)].l2 for seed in (0, 1)]
    assert table.records[1]["mean_l2"] == pytest.approx(float(torch.cat(importance).mean()))


def test_repeated_budgets_or_seeds_and_a_non_program_are_refused():
    prog, targets = tiny()
    engines = {"importance": sp.inference.Importance()}
    with pytest.raises(ValueError, match="must not repeat"):
        sp.compare(prog, targets, engines=engines, budgets=[4, 4])
    with pytest.raises(ValueError, match="must not repeat"):
        sp.compare(prog, targets, engines=engines, budgets=[4], seeds=[0, 0])
    with pytest.raises(TypeError, match="seeds must be ints"):
        sp.compare(prog, targets, engines=engines, budgets=[4], seeds=[0.5])
    with pytest.raises(TypeError, match="prog must be a spiral_ppl.programs.Program"):
        sp.compare(prog.renderer, targets, engines=engines, budgets=[4])


def test_the_paired_difference_sees_a_consistent_gap_the_separate_errors_hide():
    prog, targets = tiny()
    table = sp.compare(prog, targets, engines={"importance": sp.inference.Importance()}, budgets=[4])
    first, second = table.results[("importance", 4, 0)], table.results[("importance", 4, 0)]
    # Targets of very different difficulty, and a second engine that is worse by 0.01 on each.
    first = dataclasses.replace(first, l2=torch.tensor([0.10, 0.50, 0.90, 0.30]))
    second = dataclasses.replace(second, l2=first.l2 + torch.tensor([0.011, 0.009, 0.010, 0.010]))
    gap = sp.paired_difference(first, second)
    assert gap["mean"] == pytest.approx(-0.010) and gap["first_lower"] == 1.0 and gap["targets"] == 4
    assert gap["se"] == pytest.approx(float(torch.tensor([0.011, 0.009, 0.010, 0.010]).std() / 2), rel=1e-4)
    separate = float(first.l2.std() / 2)  # 0.17: the gap would look like noise
    assert gap["se"] < 0.01 * separate
    with pytest.raises(ValueError, match="same targets"):
        sp.paired_difference(first, dataclasses.replace(second, l2=second.l2[:3]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        sp.paired_difference(first, dataclasses.replace(second, l2=torch.tensor([0.1, float("nan"), 0.2, 0.3])))
    with pytest.raises(TypeError, match="must be an engine's Result"):
        sp.paired_difference(first, second.l2)


class CompiledSquares(sp.programs.Program):
    """White squares drawn by a kernel of its own, compiled on first use: a program whose first
    render pays a compile, as a large batch of brush strokes does."""

    channels, image_size = 1, 8
    action_space = (Component("corner", 16, "location"),)

    def __init__(self, steps):
        super().__init__(steps)
        self.kernel = CompiledWithFallback(_squares, "test squares")

    def draw(self, actions):
        return self.kernel(actions["corner"])


def _squares(corner):
    rows = torch.arange(8, device=corner.device)
    y, x = (corner // 4 * 2)[..., None], (corner % 4 * 2)[..., None]
    inside_y = ((rows >= y) & (rows < y + 2)).float()
    inside_x = ((rows >= x) & (rows < x + 2)).float()
    return torch.einsum("bty,btx->byx", inside_y, inside_x).clamp(max=1)[:, None]


def test_compiling_is_reported_apart_from_the_engine_that_met_it_first():
    prog = CompiledSquares(steps=2)
    target = prog.render({"corner": torch.tensor([[0, 5]])})  # compiles for a batch of one
    comparison = sp.compare(prog, target, {"first": sp.inference.Importance(), "second": sp.inference.Importance()},
                            budgets=[64])
    first, second = comparison.results[("first", 64, 0)], comparison.results[("second", 64, 0)]
    # The first engine's batch of 64 is a new kind of input for the kernel: it compiles again.
    assert first.diagnostics["compile_seconds"] > 0.2 > second.diagnostics["compile_seconds"] == 0.0
    # What is left is the engines' own work, the same for both (well under the compile).
    assert first.seconds < 0.5 * first.diagnostics["compile_seconds"] + 0.2
    assert torch.equal(first.l2, second.l2)
    assert "spent compiling kernels on their first call" in comparison.to_markdown()
