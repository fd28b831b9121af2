#!/usr/bin/env bash
# The critic-against-l2 runs of benchmarks/RESULTS.md ("The critic against the l2 reward") and
# the mnist-gen-cpu agent, at once on one machine of 16 or more cores with a CUDA GPU:
#
#   - MNIST: the critic and the l2 reward, each at Adam 1e-3 and 3e-4, seeds 0 and 1 (8 runs);
#     seed 0 of the blind agent and of four single changes (l2 rewards not normalised, the
#     critic's reward terminal, spectrally normalised, 3 critic steps a policy update);
#   - Omniglot (background set; curves on the evaluation set): critic and l2, seeds 0 and 1;
#   - mnist-gen-cpu on the GPU, 256 episodes an update, with temporal and with terminal rewards.
#
# Every comparison run trains on one CPU core (one torch thread) for MINUTES of training time;
# they share the machine, so their CPU seconds, not their wall time, measure compute.
# Usage, from the repository root: benchmarks/critic_vs_l2.sh RUNS OUT [MINUTES]
# The runs are written to RUNS; OUT receives what travels well: curves.tgz (every run's
# eval.csv, train.csv, config.json and log) and the generation agents' weights, gen-*.pt.
# Then, on any machine: tar xzf OUT/curves.tgz (a folder named as RUNS) and
# python benchmarks/critic_vs_l2.py report <that folder>.
# The wheels in .whl/ (pyro-ppl, pyro-api) are installed into /tmp/site where pyro is missing.
set -u
cd "$(dirname "$0")/.."
RUNS=$1
OUT=$2
MINUTES=${3:-5.2}
PYTHON=${PYTHON:-python3}
if [ -z "${SPIRAL_PPL_DATA:-}" ] && [ -d .gpu_data ]; then export SPIRAL_PPL_DATA=$PWD/.gpu_data; fi
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import pyro" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$RUNS" "$OUT"
nproc; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
"$PYTHON" -c "import torch, pyro, spiral_ppl; print('torch', torch.__version__, '| pyro', pyro.__version__)" || exit 1

compare() { "$PYTHON" benchmarks/critic_vs_l2.py run "$RUNS" "$@" --minutes "$MINUTES"; }
compare mnist critic,l2,critic-lr3e-4,l2-lr3e-4 0,1 --jobs 8 > "$RUNS/mnist.log" 2>&1 &
compare mnist blind,l2-unnormalised,critic-terminal,critic-spectral-norm,critic-3-steps 0 --jobs 5 \
    > "$RUNS/mnist-changes.log" 2>&1 &
compare omniglot critic,l2 0,1 --jobs 4 > "$RUNS/omniglot.log" 2>&1 &
if "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    for variant in temporal terminal; do
        temporal=$([ $variant = temporal ] && echo true || echo false)
        OMP_NUM_THREADS=1 "$PYTHON" -m spiral_ppl.cli train mnist-gen-cpu --out "$RUNS/gen/$variant" --device cuda \
            --minutes "$MINUTES" --set a2c.batch_size=256 --set reward.temporal=$temporal \
            > "$RUNS/gen-$variant.log" 2>&1 &
    done
fi
wait
cat "$RUNS"/*.log | grep -v '^\s*$' | tail -40
# The comparison runs' weights (3 MB each) stay behind: 19 of them are more than a device
# machine sends back. Their curves travel in one archive (nested folders do not).
(cd "$(dirname "$RUNS")" && find "$(basename "$RUNS")" \( -name eval.csv -o -name train.csv -o -name config.json \
    -o -name '*.log' \) | tar czf "$OUT/curves.tgz" -T -)
for variant in temporal terminal; do
    [ -f "$RUNS/gen/$variant/agent.pt" ] && cp "$RUNS/gen/$variant/agent.pt" "$OUT/gen-$variant.pt"
done
ls -la "$OUT"
