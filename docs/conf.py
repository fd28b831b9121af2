"""Sphinx configuration of the spiral_ppl documentation.

The site is built from the repository as it is: the README, the guides in ``docs/``, the
measured results (``benchmarks/RESULTS.md`` and the reports it links), the model cards of the
shipped agents, the example notebooks with their stored outputs (shown, not run: the test
suite runs them), and an API reference generated from the docstrings. Relative links between
these files work on the site as they do on disk.

Build it with ``bash scripts/docs.sh`` (warnings are errors); the pages land in
``build/docs/index.html``.
"""

import spiral_ppl

project = "spiral_ppl"
author = "the spiral_ppl developers"
release = version = spiral_ppl.__version__

extensions = [
    "myst_nb",  # Markdown pages and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# The source directory is the repository root (scripts/docs.sh passes it, with -c docs).
root_doc = "docs/index"
include_patterns = [
    "README.md",
    "docs/**",
    "benchmarks/RESULTS.md",
    "spiral_ppl/pretrained/*.md",
    "examples/*.ipynb",
]
exclude_patterns = ["docs/conf.py", "docs/_templates/**"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # Each object is documented once, in the module that defines it, not again wherever a
    # package re-exports it.
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "alabaster"
html_title = f"spiral_ppl {release}"
templates_path = ["_templates"]  # relative to this folder
# The front page lives at docs/index.html (beside the guides it links); index.html leads there.
html_additional_pages = {"index": "redirect.html"}
