#!/usr/bin/env bash
# Set up .venv (see setup.sh) and build the documentation site (guides, notebooks with their
# stored outputs, results, API reference) into build/docs; warnings are errors. Open
# build/docs/index.html. Extra arguments go to sphinx-build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec .venv/bin/python -m sphinx -b html -W --keep-going -E -q -c docs "$@" . build/docs
