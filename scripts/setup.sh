#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install spiral_ppl with its dev extras.
# Installs the Debian packages in scripts/system-packages.txt first when run as root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
while read -r package; do
    package="${package%%#*}"; package="${package// /}"
    [ -n "$package" ] || continue
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done < scripts/system-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: missing Debian packages ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
# Install torch on its own first: 2.13.0 is the pinned default (a CPU build of it may be
# pre-installed as a local wheel); an unpinned torch would pull the newest CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
"${pip[@]}" install -q -e ".[dev,distributed]"
