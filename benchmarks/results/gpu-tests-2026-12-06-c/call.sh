#!/usr/bin/env bash
# Every GPU test on the code as committed, in parts that fit a device call. Run from the repository root (the suite
# takes recipe paths from there) on a CUDA machine with fla-core:
#   PARTS=kernels1 bash benchmarks/results/gpu-tests-2026-12-06-c/call.sh OUT_DIR
#   PARTS=kernels2 ... ; kernels3 ; others ; models ; mamba ; fsdp   (one call each on an H100)
#   PARTS=listed LIST=FILE ...   the tests FILE names, one pytest node id a line (e.g. those a part left unrun)
# kernels: tests/test_triton_gpu.py (kernelsK: its K-th third, `--shard K/3`); others:
# every other GPU-marked test but the fast Mamba-2 path's; models: that path's whole-model tests; mamba: the rest of
# its file; fsdp: the FSDP2 training test on its own. Inputs from a fixed seed; no -x, so every failure shows. LIMITS in seconds: KERNELS_LIMIT, OTHERS_LIMIT,
# MODELS_LIMIT, MAMBA_LIMIT, FSDP_LIMIT.
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
source scripts/checkout_on_path.sh && importable_here "$PWD"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 SLKERNELS_TEST_SEED=${SLKERNELS_TEST_SEED:-6120}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton, transformers, fla; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__, '| fla-core', fla.__version__)"
} | tee -a "$OUT/env.txt"
part() {  # NAME LIMIT pytest arguments...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    # -v: every test's verdict a line as it ends, so a part stopped at its limit still says which tests passed
    timeout -k 5 "$limit" python3 -m pytest -v -p no:cacheprovider -rfEs --tb=short --durations=5 "$@" \
        > "$OUT/$name.log" 2>&1
    echo "$name: rc $? in $((SECONDS - start)) s" | tee -a "$OUT/env.txt"
    grep -cE " PASSED " "$OUT/$name.log" | sed "s/^/$name: tests passed: /" | tee -a "$OUT/env.txt"
    grep -E " passed| failed|FAILED|ERROR" "$OUT/$name.log" | tail -20
}
for p in ${PARTS:-kernels}; do
    case $p in
        kernels) part kernels "${KERNELS_LIMIT:-500}" -n 2 tests/test_triton_gpu.py ;;  # two at a time: 256K cases hold float64 references
        kernels1|kernels2|kernels3)  # a third of the file each (interleaved: tests/shards.py), a call each
            part "$p" "${KERNELS_LIMIT:-560}" -n 2 --shard "${p#kernels}/3" tests/test_triton_gpu.py ;;
        others) part others "${OTHERS_LIMIT:-500}" -n 2 -m gpu --ignore=tests/test_triton_gpu.py \
                    --ignore=tests/test_fast_mamba_gpu.py tests ;;
        models) part models "${MODELS_LIMIT:-400}" -n 4 tests/test_fast_mamba_gpu.py -k model ;;
        mamba) part mamba "${MAMBA_LIMIT:-430}" -n 4 tests/test_fast_mamba_gpu.py -k "not model" ;;
        listed) part "listed-$(basename "${LIST:?LIST=FILE of node ids}" .txt)" "${LISTED_LIMIT:-560}" -n 4 \
                    $(grep -v '^#' "$LIST") ;;
        fsdp) part fsdp "${FSDP_LIMIT:-560}" -m gpu tests/test_train_distributed.py ;;  # alone: it launches training
        *) echo "unknown part $p (kernels, kernels1, kernels2, kernels3, others, models, mamba, fsdp, listed)"; exit 2 ;;
    esac
done
