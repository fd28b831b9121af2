"""The spiral-ppl command: render, infer, demo, help and errors."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import spiral_ppl as sp
from spiral_ppl import cli, io

PROGRAM = {
    "renderer": {"type": "brush", "canvas_size": 32, "grid_size": 8},
    "steps": [
        {"flag": 0, "end_point": [1, 1], "control_point": 0, "brush_size": 0, "pressure": 0},
        {"flag": 1, "end_point": [6, 6], "control_point": [6, 1], "brush_size": 2, "pressure": 9},
    ],
}


def test_render_writes_the_program_as_a_png(tmp_path):
    path = tmp_path / "program.json"
    path.write_text(json.dumps(PROGRAM))
    assert cli.main(["render", str(path), "-o", str(tmp_path / "canvas.png")]) == 0
    pixels = np.asarray(Image.open(tmp_path / "canvas.png"))
    brush = sp.renderers.Brush(canvas_size=32, grid_size=8)
    steps = PROGRAM["steps"]
    expected = brush.render(io.actions_from_steps(brush.action_space, steps))[0, 0]
    assert pixels.shape == (32, 32)
    np.testing.assert_array_equal(pixels, (expected * 255).round().to(torch.uint8).numpy())
    assert cli.main(["render", str(path), "-o", str(tmp_path / "big.png"), "--scale", "4"]) == 0
    assert np.asarray(Image.open(tmp_path / "big.png")).shape == (128, 128)


def test_infer_writes_a_reconstruction_and_a_program_that_renders_to_it(tmp_path, capsys):
    brush = sp.renderers.Brush(canvas_size=16, grid_size=4)
    target = brush.render({c.name: torch.tensor([[1]]) for c in brush.action_space})
    io.save_image(tmp_path / "target.png", target[0])
    arguments = ["infer", str(tmp_path / "target.png"), "--steps", "1", "--canvas-size", "16", "--grid-size", "4",
                 "--renders", "300", "--out", str(tmp_path / "out")]
    assert cli.main(arguments) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["renders"] == 300 and summary["engine"] == "importance"
    renderer, actions = io.load_program(tmp_path / "out" / "program.json")
    reconstruction = io.load_image(tmp_path / "out" / "reconstruction.png", 1, 16)
    torch.testing.assert_close(reconstruction, renderer.render(actions), atol=1 / 255, rtol=0)
    assert summary["l2"] == pytest.approx(float((renderer.render(actions) - target).pow(2).mean()), abs=1e-4)


def test_program_files_round_trip(tmp_path):
    brush = sp.renderers.Brush(canvas_size=32, grid_size=8, color=True)
    actions = {c.name: torch.randint(0, c.size, (5,)) for c in brush.action_space}
    io.save_program(tmp_path / "p.json", brush, actions, note="hello")
    renderer, loaded = io.load_program(tmp_path / "p.json")
    assert renderer.color and renderer.grid_size == 8
    for name, value in actions.items():
        assert loaded[name][0].tolist() == value.tolist()
    batch = {name: value.repeat(2, 1) for name, value in actions.items()}
    with pytest.raises(ValueError, match=r"one program: \(T,\) or \(1, T\).*got \(2, 5\)"):
        io.save_program(tmp_path / "batch.json", brush, batch)
    with pytest.raises(ValueError, match="missing"):
        io.save_program(tmp_path / "partial.json", brush, {"flag": actions["flag"]})


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"flag": 1}], "missing"),
        ([dict(PROGRAM["steps"][0], colour=1)], "unknown"),
        ([dict(PROGRAM["steps"][0], end_point=[9, 1])], r"must lie in \[0, 7\]"),
        ([dict(PROGRAM["steps"][0], pressure=1.5)], "expected an int"),
        ([], "non-empty"),
    ],
)
def test_bad_program_files_get_clear_errors(tmp_path, capsys, steps, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(PROGRAM, steps=steps)))
    assert cli.main(["render", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_unreadable_inputs(tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{not json")
    assert cli.main(["render", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "fake.png").write_text("not an image")
    assert cli.main(["infer", str(tmp_path / "fake.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["render", str(tmp_path / "missing.json")]) == 2


@pytest.mark.parametrize("command", ["render", "infer", "compare", "demo", "train", "pbt", "doctor"])
def test_every_command_has_help(command):
    completed = subprocess.run(
        [sys.executable, "-m", "spiral_ppl.cli", command, "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: spiral-ppl " + command in completed.stdout


def test_version_and_doctor(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"spiral-ppl {sp.__version__} (torch {torch.__version__}")
    assert cli.main(["doctor", "--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok +MNIST sample \(in the package\) +500 digits", out, re.MULTILINE)
    assert re.search(rf"^ok +torch +{re.escape(torch.__version__)}", out, re.MULTILINE)


def test_the_demo_inverts_the_shipped_digits_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(tmp_path / "no-data-here"))  # where MNIST would be read or downloaded
    arguments = ["demo", "--targets", "2", "--budgets", "10", "--out", str(tmp_path / "demo")]
    assert cli.main(arguments) == 0
    assert f"wrote {tmp_path / 'demo' / 'report.md'}" in capsys.readouterr().out
    report = (tmp_path / "demo" / "mnist-recon" / "report.md").read_text()
    assert "| spiral | 10 |" in report and not (tmp_path / "no-data-here").exists()


def test_compare_runs_on_real_mnist_digits(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    arguments = ["compare", "mnist-recon", "--set", "program.steps=2", "--targets", "2", "--budgets", "4", "20",
                 "--engines", "importance", "smc", "smc-paper", "mcmc-paper", "--out", str(tmp_path)]
    assert cli.main(arguments) == 0
    report = (tmp_path / "report.md").read_text()
    for engine in ("importance", "smc", "smc-paper", "mcmc-paper"):
        assert f"| {engine} | 20 |" in report
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("engine,budget,mean_l2") and len(rows) == 9
    assert (tmp_path / "l2_vs_renders.png").stat().st_size > 1000
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


def test_compare_refuses_unknown_experiments(capsys):
    assert cli.main(["compare", "mnist-reconstruction"]) == 2
    assert "unknown configuration" in capsys.readouterr().err


@pytest.mark.parametrize("renderer", [sp.renderers.MujocoScene(image_size=32, grid_size=8),
                                      sp.renderers.MyPaint(canvas_size=32, grid_size=8, brush="classic/pen")],
                         ids=["mujoco", "mypaint"])
def test_every_renderer_round_trips_through_program_files(tmp_path, renderer):
    actions = {c.name: torch.randint(0, c.size, (3,)) for c in renderer.action_space}
    io.save_program(tmp_path / "p.json", renderer, actions)
    loaded_renderer, loaded = io.load_program(tmp_path / "p.json")
    assert type(loaded_renderer) is type(renderer) and loaded_renderer.settings() == renderer.settings()
    torch.testing.assert_close(loaded_renderer.render(loaded), renderer.render({k: v[None] for k, v in actions.items()}))


def test_infer_with_the_pretrained_agent_writes_its_program(tmp_path, capsys):
    agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
    target = agent.prog.render({c.name: torch.randint(0, c.size, (1, agent.prog.steps)) for c in agent.prog.action_space})
    io.save_image(tmp_path / "target.png", target[0])
    arguments = ["infer", str(tmp_path / "target.png"), "--engine", "spiral", "--agent", "mnist-recon-cpu",
                 "--renders", str(2 * agent.prog.steps), "--out", str(tmp_path / "out")]
    assert cli.main(arguments) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["engine"] == "spiral" and summary["renders"] == 2 * agent.prog.steps
    renderer, actions = io.load_program(tmp_path / "out" / "program.json")
    assert renderer.grid_size == 16 and actions["flag"].shape == (1, agent.prog.steps)


def test_infer_overrides_the_agents_decoding(tmp_path, capsys):
    agent = sp.inference.Spiral.pretrained("mnist-recon-cpu", device="cpu")
    prog = agent.prog
    target = prog.render({c.name: torch.randint(0, c.size, (1, prog.steps)) for c in prog.action_space})
    io.save_image(tmp_path / "target.png", target[0])
    base = ["infer", str(tmp_path / "target.png"), "--engine", "spiral", "--agent", "mnist-recon-cpu",
            "--renders", str(agent.prog.steps)]
    programs = []
    for seed in (0, 1):  # a greedy pass is the same whatever the seed
        assert cli.main(base + ["--greedy-first", "--seed", str(seed), "--out", str(tmp_path / f"greedy{seed}")]) == 0
        programs.append(io.load_program(tmp_path / f"greedy{seed}" / "program.json")[1])
    assert all(torch.equal(programs[0][name], programs[1][name]) for name in programs[0])
    capsys.readouterr()
    assert cli.main(base + ["--temperature", "0", "--out", str(tmp_path / "cold")]) == 2
    assert "--temperature must be positive, a finite number" in capsys.readouterr().err


def test_spiral_engines_need_an_agent(capsys):
    assert cli.main(["compare", "mnist-recon", "--engines", "spiral"]) == 2
    assert "need a SPIRAL agent" in capsys.readouterr().err
    assert cli.main(["compare", "mnist-recon", "--agent", "no-such-agent"]) == 2
    assert "neither a pretrained agent" in capsys.readouterr().err


def test_compare_with_the_pretrained_agent_on_real_digits(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    arguments = ["compare", "mnist-recon", "--agent", "mnist-recon-cpu", "--targets", "2", "--budgets", "10", "30",
                 "--engines", "spiral", "spiral-smc", "spiral-is", "smc", "--out", str(tmp_path)]
    assert cli.main(arguments) == 0
    report = (tmp_path / "report.md").read_text()
    for engine in ("spiral", "spiral-smc", "spiral-is"):
        assert f"| {engine} | 30 |" in report
    # The default SMC's moves cost a render each, so it spends its budget to within 2 renders a move per step.
    assert "| smc | 10 |" in report and ("| smc | 29 |" in report or "| smc | 30 |" in report)


def test_files_of_the_wrong_kind_and_outputs_in_the_way_are_named(tmp_path, capsys):
    image = tmp_path / "gray.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    assert cli.main(["render", str(image)]) == 2  # a PNG where a program file is expected
    assert "is not a program file: it is not text" in capsys.readouterr().err
    path = tmp_path / "program.json"
    path.write_text(json.dumps(PROGRAM))
    assert cli.main(["render", str(path), "-o", str(tmp_path / "canvas.jpg")]) == 0
    with Image.open(tmp_path / "canvas.jpg") as written:
        assert written.format == "JPEG"  # the format its name says, not PNG bytes under a .jpg name
    assert cli.main(["render", str(path), "-o", str(tmp_path / "canvas.xyz")]) == 2
    assert "cannot tell an image format" in capsys.readouterr().err
    in_the_way = tmp_path / "results"
    in_the_way.write_text("not a folder")
    assert cli.main(["infer", str(tmp_path / "canvas.jpg"), "--renders", "10", "--out", str(in_the_way)]) == 2
    assert "--out" in capsys.readouterr().err and in_the_way.read_text() == "not a folder"
    assert cli.main(["infer", str(image), "--engine", "spiral", "--agent", "mnist-recon-cpu", "--steps", "5"]) == 2
    assert "--steps describe a brush program, but --agent brings its own" in capsys.readouterr().err


def test_a_sixteen_bit_grayscale_image_keeps_its_levels(tmp_path):
    levels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 0 .. 64,512 of 65,535
    Image.fromarray(levels).save(tmp_path / "deep.png")
    pixels = io.load_image(tmp_path / "deep.png", channels=1, size=8)
    np.testing.assert_allclose(pixels[0, 0].numpy(), np.round(levels / 65535 * 255) / 255, atol=1e-6)


def test_a_truncated_mnist_file_is_named(tmp_path):
    import gzip

    from spiral_ppl.data.mnist import IMAGE_MAGIC, read_idx

    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    whole = gzip.compress(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    path.write_bytes(whole[: len(whole) // 2])  # a download cut off half-way
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is truncated or corrupt"):
        read_idx(path, IMAGE_MAGIC)
