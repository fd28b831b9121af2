"""A user's own program by reference "module:factory": resolved, on the command line, in program
files, in configurations and in SPIRAL checkpoints (the grammars: tests/custom_grammar_module.py)."""

import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import spiral_ppl as sp
from spiral_ppl import cli, experiments, io
from spiral_ppl.inference.spiral import SpiralConfig
from tests import custom_grammar_module as grammars

MODULE = "tests.custom_grammar_module"
SQUARES = f"{MODULE}:make_squares"
#: Two squares, at cells (1, 1) and (2, 2) of the 4x4 grid of corners.
PLANTED = {"corner": torch.tensor([[5, 10]]), "present": torch.tensor([[1, 1]])}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


@pytest.fixture
def target(tmp_path):
    """A picture of the planted squares, as a file."""
    image = grammars.Squares(steps=2).render(PLANTED)
    io.save_image(tmp_path / "target.png", image[0])
    return tmp_path / "target.png"


def run_cli(capsys, *arguments):
    """``spiral-ppl ARGUMENTS``, in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- resolving a reference ------------------------------------------------------------------------------------


def test_a_reference_resolves_to_a_program_that_carries_it():
    prog = sp.programs.resolve_program(SQUARES, {"steps": 3, "pixel_scale": 0.25})
    assert type(prog) is grammars.Squares and prog.steps == 3 and prog.pixel_scale == 0.25
    assert prog.program_reference == sp.programs.ProgramReference(SQUARES, {"steps": 3, "pixel_scale": 0.25})
    assert sp.programs.reference_of(prog).to_dict() == {"program": SQUARES, "options": {"steps": 3, "pixel_scale": 0.25}}
    # The factory may be the class itself.
    assert sp.programs.resolve_program(f"{MODULE}:Squares", {"steps": 1}).steps == 1
    # A Pyro model is wrapped into a PyroProgram, which draws what the model draws.
    dots = sp.programs.resolve_program(f"{MODULE}:make_dots", {"side": 3})
    assert isinstance(dots, sp.programs.PyroProgram) and (dots.steps, dots.image_size) == (2, 3)
    canvas = dots.render({"cell": torch.tensor([[0, 8]])})[0, 0]
    assert canvas.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    # A program made another way has no reference.
    assert sp.programs.reference_of(grammars.Squares(steps=2)) is None


def test_the_current_directory_is_searched_as_python_m_does(tmp_path, monkeypatch):
    name = "user_grammar_in_cwd"
    (tmp_path / f"{name}.py").write_text(f"from {MODULE} import Squares\n\ndef make(steps=1):\n"
                                         "    return Squares(steps=steps)\n")
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    try:
        assert sp.programs.resolve_program(f"{name}:make", {"steps": 4}).steps == 4
    finally:
        sys.modules.pop(name, None)
    assert sys.path == path  # the current directory was on the path only while resolving


# -- bad references: one clear line each, exit code 2, no traceback ----------------------------------------


@pytest.mark.parametrize(
    "reference, message",
    [
        ("make_squares", r"--program 'make_squares' is not a program reference 'module:factory'.*e\.g\. "
                         r"mygrammar:make_program"),
        ("no_such_grammar:make", r"no module named 'no_such_grammar' in the current directory \(.*\) or on the "
                                 r"Python path; .*PYTHONPATH"),
        (f"{MODULE}:make_square", r"has no attribute 'make_square'; its callables are \[.*'make_squares'.*\]"),
        (f"{MODULE}:NOT_CALLABLE", r"has a non-callable 'NOT_CALLABLE'"),
        (f"{MODULE}:broken", rf"--program '{MODULE}:broken': broken\(\) raised RuntimeError: the grammar needs a "
                             r"palette; fix the factory"),
        (f"{MODULE}:not_a_program", r"not_a_program\(\) returned dict, which is neither a "
                                    r"spiral_ppl.programs.Program nor a Pyro model"),
        (f"{MODULE}:dots", r"dots\(\) returned a tensor, not a program: is it a Pyro model itself\?"),
    ],
    ids=["no-colon", "no-module", "no-attribute", "not-callable", "factory-raises", "not-a-program", "a-model"],
)
def test_each_bad_reference_gets_its_own_clear_error(capsys, target, tmp_path, reference, message):
    code, out, err = run_cli(capsys, "infer", target, "--program", reference, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("spiral-ppl infer: error: --program") and re.search(message, err), err
    assert not (tmp_path / "out" / "program.json").exists()


def test_program_and_brush_options_exclude_each_other(capsys, target):
    code, _, err = run_cli(capsys, "infer", target, "--program", SQUARES, "--steps", "3", "--canvas-size", "16")
    assert code == 2 and "--steps --canvas-size describe a brush program, but --program" in err


# -- the command line and program files ---------------------------------------------------------------------


def test_infer_with_a_program_writes_a_file_that_renders_back(capsys, target, tmp_path):
    code, out, _ = run_cli(capsys, "infer", target, "--program", SQUARES, "--renders", "400", "--out", tmp_path / "out")
    assert code == 0
    summary = json.loads(out.splitlines()[0])
    document = json.loads((tmp_path / "out" / "program.json").read_text())
    assert document["program"] == SQUARES and document["options"] == {} and "renderer" not in document
    assert len(document["steps"]) == 2 and set(document["steps"][0]) == {"corner", "present"}
    # The file's program, rendered, is the reconstruction, and its l2 is the one reported.
    prog, actions = io.load_program(tmp_path / "out" / "program.json")
    assert type(prog) is grammars.Squares
    reconstruction = io.load_image(tmp_path / "out" / "reconstruction.png", 1, 8)
    torch.testing.assert_close(reconstruction, prog.render(actions), atol=1 / 255, rtol=0)
    planted = grammars.Squares(steps=2).render(PLANTED)
    assert summary["l2"] == pytest.approx(float((prog.render(actions) - planted).pow(2).mean()), abs=1e-5)
    # ... and `spiral-ppl render` draws it.
    code, out, _ = run_cli(capsys, "render", tmp_path / "out" / "program.json", "-o", tmp_path / "again.png")
    assert code == 0 and "(8x8, 2 steps)" in out
    pixels = np.asarray(Image.open(tmp_path / "again.png"))
    np.testing.assert_array_equal(pixels, (prog.render(actions)[0, 0] * 255).round().to(torch.uint8).numpy())
    code, _, err = run_cli(capsys, "render", tmp_path / "out" / "program.json", "--scale", "2")
    assert code == 2 and "a Squares program cannot re-render at another resolution" in err


def test_infer_with_a_pyro_model_finds_the_planted_dots(capsys, tmp_path):
    dots = sp.programs.resolve_program(f"{MODULE}:make_dots")
    io.save_image(tmp_path / "dots.png", dots.render({"cell": torch.tensor([[5, 10]])})[0])
    code, out, _ = run_cli(capsys, "infer", tmp_path / "dots.png", "--program", f"{MODULE}:make_dots",
                           "--renders", "2000", "--out", tmp_path / "out")
    assert code == 0 and json.loads(out.splitlines()[0])["l2"] == 0.0  # 256 programs: 2000 samples find one
    prog, actions = io.load_program(tmp_path / "out" / "program.json")
    assert isinstance(prog, sp.programs.PyroProgram)
    assert sorted(actions["cell"][0].tolist()) == [5, 10]


def test_program_files_round_trip_the_reference_and_options(tmp_path):
    prog = sp.programs.resolve_program(SQUARES, {"steps": 3, "pixel_scale": 0.25})
    actions = {"corner": torch.tensor([5, 0, 15]), "present": torch.tensor([1, 0, 1])}
    io.save_program(tmp_path / "p.json", prog, actions, note="hello")
    document = json.loads((tmp_path / "p.json").read_text())
    assert document == {"program": SQUARES, "options": {"steps": 3, "pixel_scale": 0.25}, "note": "hello",
                        "steps": [{"corner": [1, 1], "present": 1}, {"corner": [0, 0], "present": 0},
                                  {"corner": [3, 3], "present": 1}]}
    loaded, loaded_actions = io.load_program(tmp_path / "p.json")
    assert (loaded.steps, loaded.pixel_scale) == (3, 0.25) and loaded.program_reference == prog.program_reference
    assert torch.equal(loaded.render(loaded_actions), prog.render({k: v[None] for k, v in actions.items()}))
    # A program without a reference cannot be written, unless it is a renderer's.
    with pytest.raises(ValueError, match="was not made from a reference 'module:factory'"):
        io.save_program(tmp_path / "q.json", grammars.Squares(steps=3), actions)
    brush = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4), steps=1)
    io.save_program(tmp_path / "b.json", brush, {c.name: torch.tensor([1]) for c in brush.action_space})
    assert json.loads((tmp_path / "b.json").read_text())["renderer"]["type"] == "brush"
    # A file with more steps than its program has is refused, naming both.
    (tmp_path / "long.json").write_text(json.dumps(dict(document, options={"steps": 2})))
    with pytest.raises(ValueError, match="3 steps, but Squares.* has 2"):
        io.load_program(tmp_path / "long.json")


def test_compare_with_a_program_of_discs_on_the_shipped_digits(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compare", "mnist-recon", "--program", f"{MODULE}:make_discs",
                           "--set", "program.steps=1", "--set", "data.test_split=test-sample", "--targets", "2",
                           "--budgets", "8", "--engines", "importance", "smc", "--out", tmp_path)
    assert code == 0, err
    report = (tmp_path / "report.md").read_text()
    assert "Program: `Discs(steps=1, image=1x32, actions=[present:2, centre:64, radius:3, intensity:4])`" in report
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and {row.split(",")[0] for row in rows[1:]} == {"importance", "smc"}


# -- configurations -------------------------------------------------------------------------------------------


def test_a_configuration_names_a_factory_and_its_options(tmp_path):
    path = tmp_path / "squares.toml"
    path.write_text(f'[program]\nfactory = "{SQUARES}"\nsteps = 3\npixel_scale = 0.25\n')
    prog = experiments.build_program(experiments.load_config(path, ["program.steps=1"]))
    assert type(prog) is grammars.Squares and (prog.steps, prog.pixel_scale) == (1, 0.25)
    assert prog.program_reference.options == {"steps": 1, "pixel_scale": 0.25}
    # load_config(program=...) replaces a shipped configuration's [program], as --program does.
    config = experiments.load_config("mnist-recon", ["program.steps=4"], program=SQUARES)
    assert config["program"] == {"factory": SQUARES, "steps": 4} and experiments.build_program(config).steps == 4
    with pytest.raises(ValueError, match=r"\[program\] names both a renderer \('brush'\) and a factory"):
        experiments.build_program(experiments.load_config(path, ["program.renderer=brush"]))
    with pytest.raises(ValueError, match=r"\[program\] factory .*make_squares\(steps=1, pixel_scale=0.25, "
                                         r"colour=3\) raised TypeError"):
        experiments.build_program(experiments.load_config(path, ["program.steps=1", "program.colour=3"]))


# -- checkpoints ------------------------------------------------------------------------------------------------


def test_train_on_a_program_by_reference_and_load_its_checkpoint(capsys, tmp_path, monkeypatch):
    # The shipped MNIST sample for training and held-out data; one phase re-targets to a single step,
    # which the factory makes through its keyword steps.
    config = tmp_path / "squares.toml"
    config.write_text(
        f'[data]\ndataset = "mnist"\ntrain_split = "test-sample"\ntest_split = "test-sample"\n'
        f'[program]\nfactory = "{SQUARES}"\nsteps = 2\n'
        '[policy]\nchannels = 8\nres_blocks = 1\nlstm_size = 16\nlocation_channels = 4\n'
        '[a2c]\nbatch_size = 4\n[critic]\nchannels = 8\n'
        '[train]\neval_every = 3\neval_size = 4\ncheckpoint_every = 2\nlog_every = 1\n'
        '[[train.phases]]\nkind = "a2c"\nupdates = 2\nprogram_steps = 1\n'
        '[[train.phases]]\nkind = "a2c"\nupdates = 1\n'
    )
    code, _, err = run_cli(capsys, "train", config, "--out", tmp_path / "run", "--device", "cpu")
    assert code == 0, err
    for name in ("agent.pt", "checkpoint.pt"):
        agent = sp.inference.Spiral.load(tmp_path / "run" / name)
        assert type(agent.prog) is grammars.Squares and agent.prog.steps == 2
        assert agent.prog.program_reference == sp.programs.ProgramReference(SQUARES, {"steps": 2})
    assert agent.learner.updates == 3
    # A factory that has changed since, and now makes another program, is named.
    monkeypatch.setattr(grammars, "make_squares", lambda steps: grammars.Squares(steps=steps + 1))
    with pytest.raises(ValueError, match=rf"the program {SQUARES} makes now differs in \['steps'\]"):
        sp.inference.Spiral.load(tmp_path / "run" / "agent.pt")


def test_a_checkpoint_rebuilds_its_program_or_asks_for_it(capsys, tmp_path, target):
    targets = grammars.Squares(steps=2).render({"corner": torch.randint(0, 16, (8, 2)),
                                                "present": torch.randint(0, 2, (8, 2))})
    config = SpiralConfig.small(a2c={"batch_size": 4})
    for name, prog in (("referenced", sp.programs.resolve_program(f"{MODULE}:make_dots")),
                       ("notebook", grammars.Squares(steps=2))):
        agent = sp.inference.Spiral(prog, config=config, device="cpu")
        data = targets if name == "notebook" else prog.render({"cell": torch.randint(0, 16, (8, 2))})
        agent.fit(data, 2, progress=False)
        agent.save(tmp_path / f"{name}.pt")
    # A program made from a reference comes back from the checkpoint, with the trained weights.
    loaded = sp.inference.Spiral.load(tmp_path / "referenced.pt")
    assert isinstance(loaded.prog, sp.programs.PyroProgram) and loaded.prog.program_reference.name.endswith("make_dots")
    assert loaded.learner.updates == 2
    saved = torch.load(tmp_path / "referenced.pt", weights_only=True)["policy"]
    assert all(torch.equal(value, saved[key]) for key, value in loaded.policy.state_dict().items())
    # One made in a notebook must be given, in the library and on the command line.
    with pytest.raises(ValueError, match=r"Squares, which was not made from a program reference 'module:factory', "
                                         r"so the checkpoint cannot rebuild it; pass the program: "
                                         r"Spiral.load\(path, prog=...\) \(on the command line: --program"):
        sp.inference.Spiral.load(tmp_path / "notebook.pt")
    assert sp.inference.Spiral.load(tmp_path / "notebook.pt", grammars.Squares(steps=2)).learner.updates == 2
    code, _, err = run_cli(capsys, "infer", target, "--agent", tmp_path / "notebook.pt", "--engine", "spiral")
    assert code == 2 and err.startswith("spiral-ppl infer: error: --agent:") and "--program module:factory" in err
    code, out, err = run_cli(capsys, "infer", target, "--agent", tmp_path / "notebook.pt", "--program", SQUARES,
                             "--engine", "spiral", "--renders", "4", "--out", tmp_path / "out")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["engine"] == "spiral"
    assert json.loads((tmp_path / "out" / "program.json").read_text())["program"] == SQUARES
    # A program that differs from the agent's is refused, naming what differs.
    code, _, err = run_cli(capsys, "infer", target, "--agent", tmp_path / "notebook.pt", "--program",
                           f"{MODULE}:make_dots", "--engine", "spiral")
    assert code == 2 and "differs in ['action_space', 'image_size']" in err
