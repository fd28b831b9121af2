"""The example notebooks run top to bottom (with small settings: SPIRAL_PPL_SMALL=1), and are
stored with the outputs of their current code (scripts/store_notebooks.py writes them)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("store_notebooks", EXAMPLES.parent / "scripts" / "store_notebooks.py")
store_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_notebooks)


def test_there_are_notebooks():
    assert {path.name for path in NOTEBOOKS} >= {"custom_grammar.ipynb", "inverse_graphics_from_scratch.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIRAL_PPL_SMALL", "1")
    monkeypatch.setenv("SPIRAL_PPL_COMPILE", "0")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
    pictures = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert pictures, "a notebook for people shows pictures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_stored_outputs_come_from_the_current_code(path):
    notebook = nbformat.read(path, as_version=4)
    stored = notebook.metadata.get("spiral_ppl", {}).get("code_sha256")
    assert stored == store_notebooks.code_digest(notebook), (
        f"{path.name}'s stored outputs are not those of its code: run "
        f".venv/bin/python scripts/store_notebooks.py {path.relative_to(EXAMPLES.parent)}"
    )
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "run top to bottom, once"
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), "a notebook for people shows pictures"
    assert path.stat().st_size < 1_500_000, "small pictures keep the repository light"
