#!/usr/bin/env bash
# Set up .venv (see setup.sh) and run the main job: a head-to-head of the inference engines
# on MNIST test digits and MUJOCO SCENES, writing runs/demo/report.md with its plots. Extra
# arguments go to `spiral-ppl demo` (see `spiral-ppl demo --help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec .venv/bin/spiral-ppl demo --out runs/demo "$@"
