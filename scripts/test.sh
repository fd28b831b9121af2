#!/usr/bin/env bash
# Set up .venv (see setup.sh) and run the test suite. Real datasets are read from
# $SPIRAL_PPL_DATA, defaulting to ../shared/data when that folder exists.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
if [ -z "${SPIRAL_PPL_DATA:-}" ] && [ -d ../shared/data ]; then
    export SPIRAL_PPL_DATA="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/python -m pytest "$@"
