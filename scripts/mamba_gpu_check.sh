#!/usr/bin/env bash
# On a GPU machine: the fast Mamba-2 path (slconvert/fast_mamba.py on fla-core) against transformers' PyTorch
# fallback, then its timing. Results and logs go under $OUT (default ./mamba-gpu-out):
#   env.txt          GPU, torch / triton / transformers / fla versions, whether the fast path is active
#   tests-cpu.log        tests/test_fast_mamba.py (the CPU checks, run here with this transformers)
#   tests-functions.log  tests/test_fast_mamba_gpu.py: each function on fla's kernels against the fallback
#   tests-models.log     tests/test_fast_mamba_gpu.py: the tiny models of every architecture using the hook
#   mamba_bench.json     benchmarks/mamba_bench.py: one Nemotron-3-Nano-width mixer at 4K and 32K tokens (and
#                        bench.log)
# fla-core comes from the environment, or from the wheel in .whl/ (`importable_here` in scripts/checkout_on_path.sh),
# for machines without network access.
# Usage: scripts/mamba_gpu_check.sh [cpu|functions|models|tests|bench|all] [extra mamba_bench.py options...]
# (tests = cpu + functions + models; all = tests + bench; the parts also run one at a time, e.g. to stay within
# a per-command time limit while Triton compiles and autotunes fla's kernels for the first time)
# Triton's tuning results are kept in $TUNED (default ./.triton-tuned, scripts/triton_tuning.sh): restored at
# the start, saved at the end and after each part (PART_LIMIT=SECONDS bounds each part, so that the saving runs), so that a later run on a fresh machine that carries that
# folder skips the tuning (minutes per dtype) and a run cut short by a time limit still keeps what it tuned.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/mamba-gpu-out}
mkdir -p "$OUT"
WHAT=${1:-all}
shift || true
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

source "$ROOT/scripts/checkout_on_path.sh"
importable_here "$ROOT" || echo "fla-core is neither installed nor in .whl/: the GPU tests will be skipped" | tee "$OUT/env.txt"

source "$ROOT/scripts/triton_tuning.sh"
TUNED=${TUNED:-$ROOT/.triton-tuned}
tuning_restore "$TUNED" | tee -a "$OUT/env.txt"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/env.txt"
(cd /tmp && $PY - <<'PYEOF' 2>&1 | tee -a "$OUT/env.txt"
import importlib, torch, triton, transformers
import slconvert
from slconvert import fast_mamba
try:
    import fla
    fla_version = fla.__version__
except Exception as err:  # noqa: BLE001
    fla_version = f"not importable: {err}"
importlib.import_module("transformers.models.nemotron_h.modeling_nemotron_h")
print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__,
      "fla", fla_version)
print("cuda capability", torch.cuda.get_device_capability() if torch.cuda.is_available() else None)
print("fast path", fast_mamba.status())
PYEOF
)

rc=0
LIMIT=""
[ "${PART_LIMIT:-0}" -gt 0 ] && LIMIT="timeout -k 10 $PART_LIMIT"
# Each part writes its log to a file and prints it afterwards: a part ended by its limit can leave child processes
# (compile workers) that would hold a pipe to `tee` open until the machine's own limit.
pytest_part() {  # pytest_part LOG FILE [pytest args...]: run from tests/ so that the repository root is not on sys.path
  local log=$1; shift
  (cd "$ROOT/tests" && $LIMIT $PY -m pytest -v -p no:cacheprovider --rootdir "$ROOT/tests" -c /dev/null -rs --durations=15 \
      "$@" > "$OUT/$log" 2>&1) || rc=1
  cat "$OUT/$log"
  tuning_save "$TUNED" >/dev/null
}
case $WHAT in cpu|tests|all) pytest_part tests-cpu.log test_fast_mamba.py ;; esac
case $WHAT in functions|tests|all) pytest_part tests-functions.log test_fast_mamba_gpu.py -k "not model" ;; esac
case $WHAT in models|tests|all) pytest_part tests-models.log test_fast_mamba_gpu.py -k "model" ;; esac
case $WHAT in bench|all)
  (cd /tmp && $LIMIT $PY "$ROOT/benchmarks/mamba_bench.py" --out "$OUT/mamba_bench.json" "$@" > "$OUT/bench.log" 2>&1) \
      || rc=1
  cat "$OUT/bench.log"
  tuning_save "$TUNED" >/dev/null ;;
esac
tuning_save "$TUNED"
exit $rc
