"""MyPaint alone: presets by name, clear errors when libmypaint or its presets are missing,
worker processes, bounded memory. What every paint engine must do is in
tests/test_paint_renderers.py."""

import os

import numpy as np
import pytest
import torch

import spiral_ppl as sp
from spiral_ppl.renderers import libmypaint
from tests.paint_helpers import cell, program, random_programs


def horizontal_stroke(renderer, pressure=4):
    jump = {"flag": 0, "end_point": cell(renderer, 4, 16)}
    stroke = {"flag": 1, "end_point": cell(renderer, 27, 16), "control_point": cell(renderer, 16, 16),
              "brush_size": 2, "pressure": pressure}
    return renderer.render(program(renderer, [jump, stroke]))[0, 0]


@pytest.mark.parametrize("preset", ["classic/dry_brush", "classic/pen", "classic/charcoal", "classic/marker_small",
                                    "classic/pencil"])
def test_presets_by_name_paint_along_the_stroke(preset):
    image = horizontal_stroke(sp.renderers.MyPaint(brush=preset))
    row = round(16 * 63 / 31)
    assert image[row, 12:52].mean() > 0.1, "ink along the line (a pencil at half pressure is light)"
    assert image[:row - 14].sum() == 0 and image[row + 15:].sum() == 0, "none far above or below it"


def test_presets_differ():
    pen = horizontal_stroke(sp.renderers.MyPaint(brush="classic/pen"))
    dry = horizontal_stroke(sp.renderers.MyPaint(brush="classic/dry_brush"))
    assert (pen - dry).abs().mean() > 0.01
    # The pen is hard: its stroke is nearly all fully inked or blank; the dry brush is not.
    assert ((pen > 0.05) & (pen < 0.95)).float().sum() < ((dry > 0.05) & (dry < 0.95)).float().sum()


def test_a_preset_file_path_works(tmp_path):
    source = libmypaint.find_brush_dir() / "classic" / "pen.myb"
    copy = tmp_path / "my_pen.myb"
    copy.write_text(source.read_text())
    by_path = horizontal_stroke(sp.renderers.MyPaint(brush=str(copy)))
    torch.testing.assert_close(by_path, horizontal_stroke(sp.renderers.MyPaint(brush="classic/pen")))


def test_missing_library_names_the_install_command(tmp_path):
    with pytest.raises(RuntimeError, match="apt-get install libmypaint-1.5-1 mypaint-brushes"):
        sp.renderers.MyPaint(library=tmp_path / "libmypaint-1.5.so.1")


def test_a_library_that_is_not_libmypaint_is_refused():
    with pytest.raises(RuntimeError, match="not a libmypaint"):
        sp.renderers.MyPaint(library="libm.so.6")


def test_missing_brush_folder_names_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="apt-get install libmypaint-1.5-1 mypaint-brushes"):
        sp.renderers.MyPaint(brush_dir=tmp_path / "nowhere")
    monkeypatch.setenv(libmypaint.BRUSH_DIR_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="apt-get install"):
        sp.renderers.MyPaint()


def test_unknown_or_broken_presets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no brush preset .classic/no_such_brush.*classic/dry_brush"):
        sp.renderers.MyPaint(brush="classic/no_such_brush")
    broken = tmp_path / "broken.myb"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a MyPaint .myb JSON file"):
        sp.renderers.MyPaint(brush=str(broken))
    with pytest.raises(TypeError, match="preset name"):
        sp.renderers.MyPaint(brush=None)


def test_mypaint_specific_constructor_checks():
    with pytest.raises(ValueError, match="substeps"):
        sp.renderers.MyPaint(substeps=0)
    with pytest.raises(ValueError, match="dtime"):
        sp.renderers.MyPaint(dtime=0)
    with pytest.raises(ValueError, match="workers"):
        sp.renderers.MyPaint(workers=-1)


def test_state_is_the_premultiplied_layer():
    renderer = sp.renderers.MyPaint(color=True, background=0.5)
    actions = random_programs(renderer, 2, 4, seed=7)
    actions["flag"][:] = 1
    state = renderer.initial_state(2)
    for t in range(4):
        state = renderer.step(state, {name: value[:, t] for name, value in actions.items()})
    layer = state.layer
    assert layer.shape == (2, 4, 64, 64)
    assert (layer[:, :3] <= layer[:, 3:] + 1e-6).all(), "premultiplied: colour never exceeds alpha"
    assert torch.equal(layer * 2**15, (layer * 2**15).round()), "15-bit fixed point, exactly"
    torch.testing.assert_close(state.position, actions["end_point"][:, -1])
    torch.testing.assert_close(renderer.canvas(state), layer[:, :3] + (1 - layer[:, 3:]) * 0.5)


def test_workers_paint_the_same_images():
    serial = sp.renderers.MyPaint(color=True)
    parallel = sp.renderers.MyPaint(color=True, workers=2)
    try:
        actions = random_programs(serial, 2 * sp.renderers.mypaint.MIN_CANVASES_PER_WORKER, 4, seed=8)
        torch.testing.assert_close(parallel.render(actions), serial.render(actions), rtol=0, atol=0)
        assert parallel._executor is not None, "a batch this large goes to the workers"
    finally:
        parallel.close()


def resident_megabytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_memory_stays_bounded_over_100_000_strokes():
    # Small, short strokes keep this quick; every stroke still makes and frees a brush, frames
    # its dabs on the shared surface and has the surface read back.
    renderer = sp.renderers.MyPaint(canvas_size=16, grid_size=2, brush="classic/pen", sizes=(8,), substeps=1)
    actions = random_programs(renderer, 10, 1000, seed=9)
    actions["flag"][:] = 1
    images = renderer.render(actions)
    assert images.mean() > 0.1, "the strokes paint"
    baseline = resident_megabytes()
    for _ in range(10):
        renderer.render(actions)
        # A leaked brush costs ~80 kB: 10,000 of them would show here at once.
        assert resident_megabytes() - baseline < 20
    assert resident_megabytes() - baseline < 5
    np.testing.assert_array_equal(renderer.render(actions).numpy(), images.numpy())
