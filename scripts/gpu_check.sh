#!/usr/bin/env bash
# On the GPU machine: make the project importable (no dependency install: the machine has no network),
# run the Triton GPU tests, then the benchmark; results and logs go under $OUT (default ./gpu-out).
# Usage: scripts/gpu_check.sh [tests|bench|quick|all] [extra slconvert bench options...]
# SHARD=K/N runs only the K-th of N interleaved parts of the GPU tests (pytest --shard, tests/shards.py): the whole
# file takes more than 7 minutes on an H200, longer than some machines allow one command.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
WHAT=${1:-all}
shift || true
source "$ROOT/scripts/checkout_on_path.sh"
checkout_on_path "$ROOT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
rc=0
if [[ $WHAT == tests || $WHAT == all ]]; then
  # run from tests/ so that the repository root is not on sys.path
  (cd "$ROOT/tests" && $PY -m pytest -q -x -p no:cacheprovider --rootdir "$ROOT/tests" -c /dev/null \
      ${SHARD:+--shard "$SHARD"} test_triton_gpu.py 2>&1 | tee "$OUT/gpu_tests${SHARD:+-${SHARD/\//-of-}}.log") || rc=1
fi
if [[ $WHAT == bench || $WHAT == all || $WHAT == quick ]]; then
  ARGS=()
  [[ $WHAT == quick ]] && ARGS+=(--quick)
  (cd /tmp && $PY "$ROOT/benchmarks/run_bench.py" --out "$OUT" ${ARGS[@]+"${ARGS[@]}"} "$@" 2>&1 \
      | tee "$OUT/bench.log") || rc=1
fi
exit $rc
