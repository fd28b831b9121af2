"""The runnable examples in module docstrings stay true."""

import doctest
import importlib
import pkgutil

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
