"""The runnable examples in module docstrings stay true, and the documentation site builds."""

import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import spiral_ppl

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(spiral_ppl.__path__, prefix="spiral_ppl.")
    if ">>>" in (importlib.util.find_spec(name).loader.get_source(name) or "")
)


def test_some_modules_have_examples():
    assert "spiral_ppl.inference.importance" in MODULES and "spiral_ppl.programs.base" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_the_documentation_site_builds_without_warnings(tmp_path):
    root = Path(__file__).resolve().parent.parent
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-E", "-q", "-c", "docs", ".", tmp_path],
        cwd=root, capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    reference = (tmp_path / "docs" / "_generated" / "api" / "spiral_ppl.inference.spiral.agent.html").read_text()
    assert "Spiral.fit" in reference and "minutes" in reference  # methods documented from their docstrings
    notebook = (tmp_path / "examples" / "custom_grammar.html").read_text()
    assert "<img" in notebook or "image/png" in notebook  # notebooks are shown with their stored pictures
