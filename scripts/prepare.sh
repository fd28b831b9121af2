# Sourced by test.sh and demo.sh: set up .venv (see setup.sh), move to the project root and
# point SPIRAL_PPL_DATA at ../shared/data when the variable is unset and that folder exists.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
if [ -z "${SPIRAL_PPL_DATA:-}" ] && [ -d ../shared/data ]; then
    export SPIRAL_PPL_DATA="$(cd ../shared/data && pwd)"
fi
