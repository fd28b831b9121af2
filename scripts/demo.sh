#!/usr/bin/env bash
# Set up .venv (see setup.sh) and run the main job: a head-to-head of the inference engines
# on MNIST test digits, writing runs/demo/report.md with its plots. Extra arguments go to
# `spiral-ppl demo` (see `spiral-ppl demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
if [ -z "${SPIRAL_PPL_DATA:-}" ] && [ -d ../shared/data ]; then
    export SPIRAL_PPL_DATA="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/spiral-ppl demo --out runs/demo "$@"
