"""What this installation has, and for each missing part the command that fixes it.

``spiral-ppl doctor`` prints one line per part: the versions of the Python packages the
library is built on, whether MuJoCo can render headless (EGL), whether libmypaint and its
brush presets load, whether Ray and a GPU are there, and where the datasets are. A part that
is missing comes with the command, or the setting, that fixes it. Required parts are those
the main job (``scripts/demo.sh``) needs; the others are optional.

Each check is a real attempt, not a guess from file names: MuJoCo renders a small scene in a
child process (a broken OpenGL driver can crash the process that tries it), libmypaint is
loaded with its functions, and dataset files are checked against their published SHA-256.

Example::

    >>> from spiral_ppl.doctor import diagnose
    >>> parts = {part.name: part for part in diagnose(render_scene=False)}
    >>> parts["torch"].found
    True
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from spiral_ppl.data import cache

#: How to install the project's Debian packages (as root), from scripts/system-packages.txt.
GL_INSTALL = "sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0"
#: The child process that renders one MUJOCO SCENES program.
_RENDER_SCENE = """
from spiral_ppl.renderers import MujocoScene
import torch
scene = MujocoScene(16, 4)
actions = {component.name: torch.zeros(1, 1, dtype=torch.long) for component in scene.action_space}
image = scene.render(actions)
scene.close()
print(tuple(image.shape))
"""


@dataclass(frozen=True)
class Part:
    """One part of the installation: whether it was found, what was found, and the fix."""

    name: str
    found: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(name: str, distribution: str, fix: str, required: bool = True) -> Part:
    version = _version(distribution)
    if version is None:
        return Part(name, False, "not installed", fix, required)
    return Part(name, True, version, required=required)


def _torch() -> Part:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    return Part("torch", True, f"{torch.__version__} ({build}, {torch.get_num_threads()} threads)")


def _gpu() -> Part:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Part("GPU", True, names, required=False)
    fix = ("a CUDA build of torch on a machine with an NVIDIA GPU: pip install torch --index-url "
           "https://download.pytorch.org/whl/cu124 (everything also runs on the CPU)")
    return Part("GPU", False, "none visible to torch", fix, required=False)


def _mujoco_rendering(timeout: float) -> Part:
    environment = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    fix = f"{GL_INSTALL}, and MUJOCO_GL=egl (the default when unset)"
    try:
        child = subprocess.run([sys.executable, "-c", _RENDER_SCENE], env=environment, capture_output=True,
                               text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Part("MuJoCo rendering", False, f"a 16x16 scene took over {timeout:.0f} s", fix)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return Part("MuJoCo rendering", False, f"could not render a scene ({last[:200]})", fix)
    return Part("MuJoCo rendering", True, f"headless, MUJOCO_GL={environment['MUJOCO_GL']}")


def _libmypaint() -> Part:
    from spiral_ppl.renderers import libmypaint

    fix = f"sudo {libmypaint.INSTALL_COMMAND} (or set {libmypaint.LIBRARY_VARIABLE} and {libmypaint.BRUSH_DIR_VARIABLE})"
    try:
        library = libmypaint.load_library()
        brushes = libmypaint.find_brush_dir()
    except RuntimeError as error:
        return Part("libmypaint", False, str(error).split(". ")[0], fix, required=False)
    presets = len(list(brushes.rglob("*.myb")))
    return Part("libmypaint", True, f"{library._name}, {presets} brush presets in {brushes}", required=False)


def _mnist_sample() -> Part:
    from spiral_ppl.data import MNIST

    try:
        digits = MNIST(split="test-sample", download=False)
    except (OSError, ValueError) as error:
        return Part("MNIST sample (in the package)", False, str(error)[:200],
                    "reinstall spiral_ppl: pip install --force-reinstall -e .")
    return Part("MNIST sample (in the package)", True, f"{len(digits)} digits, checksums verified")


def _dataset(name: str, files: dict[str, str], fix: str) -> Part:
    from spiral_ppl.data.integrity import ChecksumError, verify

    root = cache.default_root(name)
    missing = [file for file in files if not (root / file).is_file()]
    if missing:
        return Part(f"{name} data", False, f"{root} lacks {', '.join(missing)}", fix, required=False)
    try:
        for file, sha256 in files.items():
            verify(root / file, sha256, fix="delete it and download it again")
    except ChecksumError as error:
        return Part(f"{name} data", False, str(error).split(":")[0] + " fails its checksum", fix, required=False)
    return Part(f"{name} data", True, f"{root}, checksums verified", required=False)


def _cache() -> Part:
    root = cache.cache_root("")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".doctor-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        return Part("cache folder", False, f"{root} is not writable ({error.strerror})",
                    "export SPIRAL_PPL_CACHE=<a writable folder>")
    return Part("cache folder", True, str(root))


def diagnose(render_scene: bool = True, timeout: float = 120.0) -> list[Part]:
    """Check every part; ``render_scene=False`` skips MuJoCo's test render (seconds)."""
    from spiral_ppl.data import mnist, omniglot

    data_variable = os.environ.get("SPIRAL_PPL_DATA")
    data_fix = "spiral_ppl downloads MNIST when first read online; or export SPIRAL_PPL_DATA=<folder with mnist/>"
    checks: list[Callable[[], Part]] = [
        lambda: Part("python", True, platform.python_version()),
        lambda: _package("spiral_ppl", "spiral_ppl", "pip install -e . (from the repository)"),
        _torch,
        lambda: _package("pyro-ppl", "pyro-ppl", "pip install pyro-ppl"),
        lambda: _package("mujoco", "mujoco", "pip install mujoco"),
        lambda: _mujoco_rendering(timeout) if render_scene else Part("MuJoCo rendering", True, "not tried"),
        _libmypaint,
        lambda: _package("ray", "ray", "pip install 'ray[tune]' (or the extra: pip install -e '.[distributed]')",
                         required=False),
        _gpu,
        _cache,
        _mnist_sample,
        lambda: _dataset("mnist", {name: mnist.SHA256[name] for name in mnist.FILES["test"] + mnist.FILES["train"]},
                         data_fix),
        lambda: _dataset("omniglot", {"images_background.npz": omniglot.SHA256["images_background.npz"]},
                         "export SPIRAL_PPL_DATA=<folder with omniglot/> holding the Omniglot npz arrays"),
        lambda: Part("SPIRAL_PPL_DATA", bool(data_variable), data_variable or "not set (datasets go to the cache)",
                     "export SPIRAL_PPL_DATA=<folder of datasets> to read them from there", required=False),
    ]
    parts = []
    for check in checks:
        try:
            parts.append(check())
        except Exception as error:  # noqa: BLE001 - a doctor reports what it finds, it does not stop
            parts.append(Part(getattr(check, "__name__", "check").strip("_"), False,
                              f"{type(error).__name__}: {error}", "see the message"))
    return parts


def report(parts: list[Part]) -> str:
    """The parts as aligned lines: status, name, what was found, and the fix when missing."""
    width = max(len(part.name) for part in parts)
    lines = []
    for part in parts:
        status = "ok" if part.found else ("MISSING" if part.required else "absent")
        line = f"{status:8} {part.name:{width}}  {part.detail}"
        if not part.found and part.fix:
            line += f"\n{'':8} {'':{width}}  fix: {part.fix}"
        lines.append(line)
    return "\n".join(lines)
