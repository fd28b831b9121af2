#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md, in one run on a CUDA machine:
#
#   1. brush strokes per second at 64x64, every stroke inked: the CUDA rows of
#      bench_brush.py (batches 1, 1024 and 65536, eager and compiled), then a sweep of the
#      compiled brush over batches with CUDA events (gpu_measurements.py brush-sweep), and
#      the tiled painting of the CPU forced on the GPU against painting every pixel
#      (gpu_measurements.py brush-tiles);
#   2. SPIRAL agent steps per second: the CUDA rows of bench_spiral.py (batches 64 and 1024,
#      the l2 and the critic reward, the shipped MNIST network);
#   3. a short SPIRAL training run on MNIST reconstruction (`spiral-ppl train`, by default the
#      recipe of the shipped agent, mnist-recon-cpu, on the GPU) for TRAIN_MINUTES minutes:
#      its train.csv and eval.csv (one pass l2 on held-out test digits against training
#      time), then one pass of the final agent on the first 1,000 MNIST test digits.
#
# Run from the repository root:
#
#   OUT=/tmp/gpu SPIRAL_PPL_DATA=../shared/data benchmarks/gpu_measurements.sh
#
# The figures in RESULTS.md (2026-12-04, one NVIDIA H200) came from two runs on a machine
# with no network: MNIST's IDX files copied into .gpu_data/mnist and the pyro-ppl and
# pyro-api wheels into .whl/ (both carried there), then `BUDGET_S=420
# benchmarks/gpu_measurements.sh` (steps 1 and 1b; 2 and 3 failed there on a bug of
# training.check_weights on CUDA, since fixed in the library) and `BUDGET_S=400 BRUSH_K=
# benchmarks/gpu_measurements.sh` (1b again, 2 and 3, with the same per-device check
# patched into the process; the library now does that check itself).
#
# Settings (environment variables, with their defaults):
#   OUT=runs/gpu_measurements  folder of the results: log.txt, brush.json and spiral.json
#                              (pytest-benchmark), gpu.json (environment, sweep, final
#                              evaluation), train.csv, eval.csv, curve.png, samples.png
#   PYTHON=python3             the interpreter (with torch, pytest and pytest-benchmark;
#                              spiral_ppl is taken from this checkout through PYTHONPATH)
#   SPIRAL_PPL_DATA            folder holding mnist/ (the four IDX files); default .gpu_data
#                              when it exists. Without MNIST's training files, step 3 is skipped.
#   DEVICE=cuda                device of steps 1 (sweep), 3 and the final evaluation
#   BRUSH_K=cuda               pytest -k selection of bench_brush.py ('' skips it)
#   SWEEP_BATCHES=1024,4096,16384,65536,262144   batches of the sweep ('' skips it)
#   TILES_SIZES=16,64,128      canvas sizes of the tiled-painting check (gpu_measurements.py
#                              brush-tiles: where and why tiles differ on the GPU; '' skips it)
#   SPIRAL_K='agent_steps and cuda'   pytest -k selection of bench_spiral.py ('' skips it)
#   TRAIN_CONFIG=mnist-recon-cpu   configuration of step 3 (a shipped name or a .toml file)
#   TRAIN_MINUTES=3            training time of step 3 (0 skips it)
#   BUDGET_S=0                 when > 0: wall seconds for the whole script; step 3 trains for
#                              less if the steps before it left less than TRAIN_MINUTES + 90 s
#
# Missing Python packages (pyro-ppl, pyro-api on a machine without them) are installed from
# the wheels in .whl/ when that folder exists (into /tmp/site, nothing else is touched).
# A step that fails is reported and the next one still runs; the exit status is 1 if any failed.

set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_measurements}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BRUSH_K=${BRUSH_K-cuda}
SWEEP_BATCHES=${SWEEP_BATCHES-1024,4096,16384,65536,262144}
TILES_SIZES=${TILES_SIZES-16,64,128}
SPIRAL_K=${SPIRAL_K-agent_steps and cuda}
TRAIN_CONFIG=${TRAIN_CONFIG:-mnist-recon-cpu}
TRAIN_MINUTES=${TRAIN_MINUTES:-3}
BUDGET_S=${BUDGET_S:-0}
if [ -z "${SPIRAL_PPL_DATA:-}" ] && [ -d .gpu_data ]; then SPIRAL_PPL_DATA=$PWD/.gpu_data; fi
export SPIRAL_PPL_DATA PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-15}  # fewer progress lines in the log
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUN_DIR=$(mktemp -d)/run  # the training run's folder (checkpoints stay out of $OUT)

main() {
    local failed=0
    step() { echo; echo "=== $* ($(date -u +%H:%M:%S), ${SECONDS}s) ==="; }

    step environment
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --format=csv \
        --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw
    if ls .whl/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import pyro" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || failed=1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    "$PYTHON" -c "import sys, torch, pyro, pytest_benchmark, spiral_ppl; print('python', sys.version.split()[0], \
'| torch', torch.__version__, 'CUDA', torch.version.cuda, '| pyro', pyro.__version__, '| spiral_ppl from', \
spiral_ppl.__file__); print('GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" \
        || { echo "the packages above are missing: stopping"; return 1; }
    git log -1 --format='checkout: %H %s' 2>/dev/null || true

    if [ -n "$BRUSH_K" ]; then
        step "1. bench_brush.py -k '$BRUSH_K'"
        "$PYTHON" -m pytest benchmarks/bench_brush.py -p no:cacheprovider -q -k "$BRUSH_K" --benchmark-enable \
            --benchmark-json="$OUT/brush.json" --benchmark-columns=mean,median,min,max,rounds \
            --benchmark-sort=name || failed=1
    fi
    if [ -n "$SWEEP_BATCHES" ]; then
        step "1b. brush sweep over batches $SWEEP_BATCHES"
        "$PYTHON" benchmarks/gpu_measurements.py brush-sweep --batches "$SWEEP_BATCHES" --device "$DEVICE" \
            --json "$OUT/gpu.json" || failed=1
    fi
    if [ -n "$TILES_SIZES" ]; then
        step "1c. tiled against every-pixel painting at canvas sizes $TILES_SIZES"
        "$PYTHON" benchmarks/gpu_measurements.py brush-tiles --sizes "$TILES_SIZES" --device "$DEVICE" \
            --json "$OUT/gpu.json" || failed=1
    fi
    if [ -n "$SPIRAL_K" ]; then
        step "2. bench_spiral.py -k '$SPIRAL_K'"
        "$PYTHON" -m pytest benchmarks/bench_spiral.py -p no:cacheprovider -q -k "$SPIRAL_K" --benchmark-enable \
            --benchmark-json="$OUT/spiral.json" --benchmark-columns=mean,median,min,max,rounds \
            --benchmark-sort=name || failed=1
    fi

    local minutes=$TRAIN_MINUTES
    if [ "$BUDGET_S" -gt 0 ]; then  # leave about 90 s for start-up, the final evaluation and the summary
        minutes=$("$PYTHON" -c "print(round(max(0.0, min($TRAIN_MINUTES, ($BUDGET_S - $SECONDS - 90) / 60)), 2))")
    fi
    if [ ! -e "$SPIRAL_PPL_DATA/mnist/train-images-idx3-ubyte.gz" ]; then
        step "3. training skipped: no MNIST training files in SPIRAL_PPL_DATA=$SPIRAL_PPL_DATA"
    elif [ "$("$PYTHON" -c "print(int($minutes > 0))")" = 0 ]; then
        step "3. training skipped (TRAIN_MINUTES=$TRAIN_MINUTES, BUDGET_S=$BUDGET_S)"
    else
        step "3. spiral-ppl train $TRAIN_CONFIG --device $DEVICE --minutes $minutes"
        local limit
        limit=$("$PYTHON" -c "print(int($minutes * 60 + 120))")  # a hard stop, in case a chunk overruns
        timeout "$limit" "$PYTHON" -c 'import sys; from spiral_ppl import cli; sys.exit(cli.main(sys.argv[1:]))' train "$TRAIN_CONFIG" --device "$DEVICE" --minutes "$minutes" \
            --out "$RUN_DIR" || failed=1
        for name in train.csv eval.csv curve.png; do
            [ -e "$RUN_DIR/$name" ] && cp "$RUN_DIR/$name" "$OUT/"
        done
        local samples
        samples=$(ls -t "$RUN_DIR"/samples_*.png 2>/dev/null | head -1)
        [ -n "$samples" ] && cp "$samples" "$OUT/samples.png" && echo "samples.png is $(basename "$samples")"
        step "3b. final evaluation: one pass on the first 1,000 MNIST test digits"
        if [ -e "$RUN_DIR/agent.pt" ]; then
            "$PYTHON" benchmarks/gpu_measurements.py evaluate "$RUN_DIR" --digits 1000 --device "$DEVICE" \
                --json "$OUT/gpu.json" || failed=1
        else
            echo "no agent.pt in $RUN_DIR"; failed=1
        fi
    fi

    step summary
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv
    "$PYTHON" benchmarks/gpu_measurements.py summary "$OUT" || failed=1
    echo "total ${SECONDS}s; results in $OUT; failed steps: $failed"
    return "$failed"
}

main 2>&1 | tee "$OUT/log.txt"
