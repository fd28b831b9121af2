"""The spiral-ppl command refuses a user's mistake at the boundary: one line on stderr that names
the argument, what it expects and what to do, exit code 2, no traceback, nothing written.

Each case runs ``cli.main`` in this process (what the ``spiral-ppl`` script calls) and stops
before any inference or training, so each takes milliseconds; an exception escaping
``cli.main`` (a traceback for the user) fails the test.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spiral_ppl import cli, io

STEP = {"flag": 1, "end_point": [3, 3], "control_point": [0, 3], "brush_size": 2, "pressure": 9}
PROGRAM = {"renderer": {"type": "brush", "canvas_size": 16, "grid_size": 4}, "steps": [STEP]}
#: A brush small enough that an accepted infer takes a fraction of a second.
SMALL_BRUSH = ["--steps", "1", "--canvas-size", "16", "--grid-size", "4", "--renders", "2"]
#: The same for the program of a configuration.
SMALL_PROGRAM = ["--set", "program.canvas_size=16", "--set", "program.grid_size=4", "--set", "program.steps=2"]


def refused(capsys, arguments: list[str], *named: str) -> str:
    """Run the command; check it refused with one line naming each of ``named``; return that line."""
    code = cli.main(arguments)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (arguments, captured.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("spiral-ppl") and ": error: " in lines[0], lines[0]
    for name in named:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def files(tmp_path):
    """A folder of inputs: a good program and image, and files of the wrong kind."""
    (tmp_path / "program.json").write_text(json.dumps(PROGRAM))
    ink = np.zeros((16, 16), np.uint8)
    ink[4:12, 6:10] = 255
    Image.fromarray(ink).save(tmp_path / "ink.png")
    whole = (tmp_path / "ink.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.json").write_text("")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "black.png")
    frames = [Image.fromarray(ink), Image.fromarray(255 - ink)]
    frames[0].save(tmp_path / "animation.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("in the way")
    return tmp_path


# -- values of the wrong type or out of range, refused as the command line is read -------------------------

BAD_VALUES = [
    # (arguments, the option the message must name)
    (["render", "p.json", "--scale", "abc"], "--scale"),
    (["render", "p.json", "--scale", "1.5"], "--scale"),
    (["render", "p.json", "--scale", "0"], "--scale"),
    (["infer", "i.png", "--renders", "abc"], "--renders"),
    (["infer", "i.png", "--renders", "1e3"], "--renders"),
    (["infer", "i.png", "--renders", "-5"], "--renders"),
    (["infer", "i.png", "--renders", str(10**23)], "--renders"),
    (["infer", "i.png", "--renders", ""], "--renders"),
    (["infer", "i.png", "--seed", "-1"], "--seed"),
    (["infer", "i.png", "--seed", str(2**32)], "--seed"),
    (["infer", "i.png", "--steps", "0"], "--steps"),
    (["infer", "i.png", "--canvas-size", "100000"], "--canvas-size"),
    (["infer", "i.png", "--grid-size", "1"], "--grid-size"),
    (["infer", "i.png", "--temperature", "nan"], "--temperature"),
    (["infer", "i.png", "--temperature", "inf"], "--temperature"),
    (["infer", "i.png", "--temperature", "0"], "--temperature"),
    (["infer", "i.png", "--engine", "bogus"], "--engine"),
    (["compare", "mnist-recon", "--targets", "0"], "--targets"),
    (["compare", "mnist-recon", "--budgets", "10", "0"], "--budgets"),
    (["compare", "mnist-recon", "--seeds", "1.5"], "--seeds"),
    (["train", "mnist-recon", "--minutes", "0"], "--minutes"),
    (["train", "mnist-recon", "--minutes", "nan"], "--minutes"),
    (["train", "mnist-recon", "--workers", "-1"], "--workers"),
    (["train", "mnist-recon", "--seed", "-1"], "--seed"),
    (["train", "mnist-recon", "--seed", "x"], "--seed"),
    (["train", "mnist-recon", "--device", "gpu"], "--device"),
    (["train", "mnist-recon", "--device", "cuda:99"], "--device"),
    (["pbt", "mnist-recon", "--population", "1"], "--population"),
    (["pbt", "mnist-recon", "--interval", "0"], "--interval"),
    (["demo", "--targets", "-1"], "--targets"),
    (["demo", "--seed", "abc"], "--seed"),
]


@pytest.mark.parametrize("arguments, option", BAD_VALUES, ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_option(capsys, arguments, option):
    line = refused(capsys, arguments, option)
    assert line.endswith(f"see spiral-ppl {arguments[0]} --help")
    value = arguments[-1]
    assert repr(value) in line or value in line  # the value as given, to find it in a long command


EMPTY = [
    (["render", ""], "program"), (["render", "p.json", "-o", ""], "-o/--output"), (["infer", ""], "image"),
    (["infer", "i.png", "--out", ""], "--out"), (["infer", "i.png", "--agent", ""], "--agent"),
    (["compare", ""], "config"), (["train", "mnist-recon", "--out", ""], "--out"),
    (["pbt", "mnist-recon", "--out", ""], "--out"), (["demo", "--out", ""], "--out"),
]


@pytest.mark.parametrize("arguments, name", EMPTY, ids=[f"{a[0]} {n}" for a, n in EMPTY])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(capsys, tmp_path, monkeypatch, arguments, name):
    monkeypatch.chdir(tmp_path)
    refused(capsys, arguments, name, "must not be empty")
    assert list(tmp_path.iterdir()) == []


def test_argparse_mistakes_are_one_line_too(capsys):
    refused(capsys, [], "required: command")
    refused(capsys, ["paint"], "invalid choice: 'paint'")
    refused(capsys, ["infer", "i.png", "--renderz", "3"], "unrecognized arguments: --renderz")
    assert cli.main(["render", "--help"]) == 0


# -- files of the wrong kind -------------------------------------------------------------------------------

WRONG_PROGRAMS = {
    "folder": ("folder", "is a folder"),
    "image": ("ink.png", "not a program file: it is not text"),
    "empty": ("empty.json", "not valid JSON"),
    "a list": ([1, 2], 'an object with "renderer" and "steps"'),
    "huge canvas": ({"renderer": {"type": "brush", "canvas_size": 100000, "grid_size": 4}, "steps": [STEP]},
                    "100000-pixel canvas"),
    "huge value": (dict(PROGRAM, steps=[dict(STEP, pressure=10**30)]), "step 0 pressure: must lie in [0, 9]"),
    "value out of range": (dict(PROGRAM, steps=[dict(STEP, flag=5)]), "step 0 flag: must lie in [0, 1]"),
}


@pytest.mark.parametrize("content, message", WRONG_PROGRAMS.values(), ids=WRONG_PROGRAMS.keys())
def test_a_program_file_of_the_wrong_kind_is_named(capsys, files, content, message):
    path = files / content if isinstance(content, str) else files / "bad.json"
    if not isinstance(content, str):
        path.write_text(json.dumps(content))
    refused(capsys, ["render", str(path), "-o", str(files / "out.png")], message)
    assert not (files / "out.png").exists()


def test_a_program_file_with_a_byte_order_mark_reads(files):
    (files / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(PROGRAM).encode())
    assert cli.main(["render", str(files / "bom.json"), "-o", str(files / "out.png")]) == 0


WRONG_IMAGES = {
    "folder": ("folder", "cannot read"),
    "program": ("program.json", "cannot read"),
    "empty": ("empty.png", "cannot read"),
    "truncated": ("truncated.png", "truncated"),
    "animation": ("animation.gif", "animation of 2 frames"),
    "flat": ("black.png", "one flat colour"),
}


@pytest.mark.parametrize("name, message", WRONG_IMAGES.values(), ids=WRONG_IMAGES.keys())
def test_an_image_of_the_wrong_kind_is_named(capsys, files, name, message):
    refused(capsys, ["infer", str(files / name), *SMALL_BRUSH, "--out", str(files / "out")], name, message)
    assert not (files / "out").exists()


def test_a_flat_image_asks_for_invert(capsys, files):
    assert "pass --invert" in refused(capsys, ["infer", str(files / "black.png"), *SMALL_BRUSH], "black.png")


def test_transparent_pixels_are_background(files):
    # Black ink on a transparent sheet: with --invert the sheet is white, so the ink shows.
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[4:12, 6:10] = [0, 0, 0, 255]
    Image.fromarray(pixels, "RGBA").save(files / "transparent.png")
    image = io.load_image(files / "transparent.png", channels=1, size=16, invert=True)
    assert image[0, 0, 8, 8] == 1 and image[0, 0, 0, 0] == 0
    dark = io.load_image(files / "transparent.png", channels=1, size=16)
    assert float(dark.max()) == 0  # without --invert the sheet is black: infer then refuses the flat image


WRONG_CONFIGS = {
    "image": ("ink.png", "not text"),
    "folder": ("folder", "no configuration file"),
    "a table that is a value": ("program = 3\n", "program must be a table"),
    "a name that is a number": ("name = 3\n", "name must be a string"),
    "not TOML": ("[program\n", "not valid TOML"),
}


@pytest.mark.parametrize("content, message", WRONG_CONFIGS.values(), ids=WRONG_CONFIGS.keys())
def test_a_configuration_of_the_wrong_kind_is_named(capsys, files, content, message):
    path = files / content if "\n" not in content else files / "bad.toml"
    if "\n" in content:
        path.write_text(content)
    refused(capsys, ["compare", str(path), "--out", str(files / "out")], path.name, message)


def test_an_agent_file_of_the_wrong_kind_is_named(capsys, files):
    refused(capsys, ["infer", str(files / "ink.png"), "--engine", "spiral", "--agent", str(files / "ink.png")],
            "--agent", "not a readable SPIRAL checkpoint")
    refused(capsys, ["infer", str(files / "ink.png"), "--engine", "spiral", "--agent", str(files / "folder")],
            "--agent", "is a folder")


# -- outputs that cannot be written, refused before any work -----------------------------------------------


@pytest.mark.parametrize("output, message", [("folder", "is a folder; name the image"),
                                             ("canvas", "cannot tell an image format"),
                                             ("a-file/canvas.png", "is a file, so nothing can be written under it")])
def test_an_image_output_that_cannot_be_written_is_named(capsys, files, output, message):
    refused(capsys, ["render", str(files / "program.json"), "-o", str(files / output)], "-o/--output", message)


@pytest.mark.parametrize("command", [["infer", "ink.png", *SMALL_BRUSH], ["compare", "mnist-recon"],
                                     ["train", "mnist-recon"], ["pbt", "mnist-recon"], ["demo"]],
                         ids=lambda command: command[0])
def test_an_output_folder_under_a_file_is_named(capsys, files, command):
    arguments = [str(files / part) if part.endswith(".png") else part for part in command]
    refused(capsys, arguments + ["--out", str(files / "a-file" / "run")], "--out", "is a file")


# -- options that would be ignored in this combination ------------------------------------------------------


def test_options_that_would_be_ignored_are_refused(capsys, files):
    image = str(files / "ink.png")
    refused(capsys, ["infer", image, *SMALL_BRUSH, "--temperature", "0.5"], "--temperature", "no --agent")
    refused(capsys, ["infer", image, *SMALL_BRUSH, "--no-greedy-first"], "--no-greedy-first", "no --agent")
    refused(capsys, ["infer", image, "--agent", "mnist-recon-cpu", "--greedy-first"], "--greedy-first",
            "no engine here runs it")
    refused(capsys, ["compare", "mnist-recon", "--greedy-first"], "--greedy-first", "no --agent")
    refused(capsys, ["train", "mnist-recon", "--ray-address", "auto"], "--ray-address", "--workers")
    refused(capsys, ["compare", "mnist-recon", "--set", "a2c.lr=3e-4"], "--set a2c.lr=3e-4", "would be ignored")
    refused(capsys, ["compare", "mnist-recon", "--agent", "mnist-recon-cpu", "--set", "program.steps=2"],
            "--set program.steps=2", "agent's own program")


@pytest.mark.parametrize("option, values", [("--engines", ["smc", "smc"]), ("--budgets", ["20", "20"]),
                                            ("--seeds", ["1", "0", "1"])])
def test_a_repeated_list_item_is_refused(capsys, option, values):
    refused(capsys, ["compare", "mnist-recon", option, *values], option, "repeats")


def test_a_budget_too_small_for_an_engine_names_the_option(capsys, files):
    refused(capsys, ["infer", str(files / "ink.png"), *SMALL_BRUSH, "--engine", "mcmc"], "--renders 2", "mcmc",
            "--renders 4 or more")
    refused(capsys, ["infer", str(files / "ink.png"), "--agent", "mnist-recon-cpu", "--engine", "spiral",
                     "--renders", "3"], "--renders 3", "--renders 10 or more")
    refused(capsys, ["compare", "mnist-recon", *SMALL_PROGRAM, "--engines", "smc", "--budgets", "1", "10"],
            "--budgets 1", "--budgets 2 or more")
    # Budgets the user did not give are called the defaults.
    refused(capsys, ["compare", "mnist-recon", *SMALL_PROGRAM, "--engines", "mcmc"], "default budgets [2, 20, 200]")


def test_compare_names_targets_and_agents_that_do_not_fit_the_data(capsys, data_root, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(data_root))
    refused(capsys, ["compare", "mnist-recon", *SMALL_PROGRAM, "--engines", "smc", "--targets", "10001"],
            "--targets 10001", "10000 held-out images")
    refused(capsys, ["compare", "mnist-recon", "--agent", "scenes-recon-cpu", "--targets", "1"], "--agent",
            "3-channel", "1-channel")


# -- --set: the key, the table, the value -------------------------------------------------------------------

BAD_OVERRIDES = [
    ("steps=3", "table.key=value"), ("program=3", "table.key=value"), ("model.steps=3", "unknown table 'model'"),
    ("train.phases.5.updates=3", "not an index"), ("program.steps.x=1", "is a value, not a table"),
    ("program.steps=abc", "[program] steps must be a positive int"), ("program.steps=0", "[program] steps"),
    ("program.color=yes", "[program] color must be true or false"),
    ("program.canvas_size=100000", "[program] canvas_size must be at most 4096"),
    ("train.phases=3", "train.phases must be a list of tables"),
    ("agent.blind=maybe", "[agent] blind must be true or false"),
    ("a2c.lr=abc", "a2c.lr must be positive"),
]


@pytest.mark.parametrize("override, message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_a_bad_override_is_named_before_any_data_is_read(capsys, tmp_path, override, message):
    # No data root: reaching the data would fail with another message.
    arguments = ["train", "mnist-recon", "--set", override, "--set", f"data.root={str(tmp_path / 'none')!r}",
                 "--out", str(tmp_path / "run")]
    refused(capsys, arguments, message)
    assert not (tmp_path / "run").exists()


def test_infer_still_runs_on_good_input(files, capsys):
    assert cli.main(["infer", str(files / "ink.png"), *SMALL_BRUSH, "--out", str(files / "out")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["renders"] == 2
    renderer, actions = io.load_program(files / "out" / "program.json")
    assert renderer.image_size == 16 and torch.is_tensor(actions["flag"])
