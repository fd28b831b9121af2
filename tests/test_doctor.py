"""spiral-ppl doctor: every part is really tried, and a missing part comes with its fix."""

import torch

from spiral_ppl import doctor


def parts(**options):
    return {part.name: part for part in doctor.diagnose(**options)}


def test_versions_are_those_installed_and_the_sample_is_verified():
    found = parts(render_scene=False)
    assert found["torch"].found and found["torch"].detail.startswith(torch.__version__)
    assert found["MNIST sample (in the package)"].detail == "500 digits, checksums verified"
    assert found["GPU"].found == torch.cuda.is_available() and not found["GPU"].required


def test_missing_parts_are_named_with_the_command_that_fixes_them(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIRAL_PPL_LIBMYPAINT", str(tmp_path / "no-libmypaint.so"))
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    monkeypatch.setenv("SPIRAL_PPL_DATA", str(tmp_path))  # a data folder without datasets
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not MNIST")
    for name in ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist" / name).write_bytes(b"")
    found = parts()
    assert not found["libmypaint"].found and "apt-get install libmypaint" in found["libmypaint"].fix
    assert not found["MuJoCo rendering"].found and "MUJOCO_GL=egl" in found["MuJoCo rendering"].fix
    assert not found["mnist data"].found and "fails its checksum" in found["mnist data"].detail
    assert not found["omniglot data"].found
    text = doctor.report(list(found.values()))
    assert "MISSING  MuJoCo rendering" in text and "absent   libmypaint" in text and "fix: sudo apt-get" in text
