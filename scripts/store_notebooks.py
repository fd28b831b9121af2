"""Run the example notebooks at full size and store them with their outputs.

The notebooks are stored executed, so that a reader (and the documentation site) sees their
pictures without running anything. Each stored notebook records a SHA-256 of its code cells
in its metadata (``spiral_ppl.code_sha256``); the test suite checks it, so a cell edited
without running the notebook again fails the tests instead of showing outputs of other code.

Usage (after any change to a notebook's code, or to the library behind its figures)::

    .venv/bin/python scripts/store_notebooks.py                       # every notebook
    .venv/bin/python scripts/store_notebooks.py examples/custom_grammar.ipynb
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def code_digest(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 over the sources of a notebook's code cells, in order."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()


def store(path: Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # files the notebook writes do not land in examples/
        NotebookClient(notebook, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.metadata.pop("execution", None)  # timestamps would make every run a diff
    notebook.metadata["spiral_ppl"] = {"code_sha256": code_digest(notebook)}
    nbformat.write(notebook, path)
    print(f"{path.name}: {time.perf_counter() - started:.0f} s, {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    os.environ.pop("SPIRAL_PPL_SMALL", None)  # full size
    paths = [Path(argument) for argument in sys.argv[1:]] or sorted(EXAMPLES.glob("*.ipynb"))
    for notebook_path in paths:
        store(notebook_path)
