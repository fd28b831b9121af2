#!/usr/bin/env bash
# Set up .venv (see setup.sh) and run the test suite; extra arguments go to pytest. Real
# datasets are read from $SPIRAL_PPL_DATA, by default ../shared/data when it exists.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec .venv/bin/python -m pytest "$@"
