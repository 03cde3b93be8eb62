# `slconvert bench --pass forward` at 16K-256K on the card this runs on: both settings, the search keys of KEYS
# (default the anchor key; KEYS="anchor span_mean" for both), dense SDPA in the same process (the protocol of
# docs/semantics.md). Run from the repository root on a CUDA machine:
#   bash benchmarks/results/bench-h100-2026-12-07/call.sh OUT_DIR
set -uo pipefail
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
source scripts/checkout_on_path.sh && importable_here "$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
  git log -1 --format='commit %H' 2>/dev/null || true
} | tee "$OUT/card.txt"
start=$SECONDS
(cd /tmp && timeout "${BENCH_LIMIT:-560}" python3 -m slconvert.cli bench --pass forward --no-million \
    $(for k in ${KEYS:-anchor}; do echo --search-key $k; done) --out "$OUT/bench") > "$OUT/bench.log" 2>&1
echo "bench rc $? in $((SECONDS - start)) s" | tee -a "$OUT/card.txt"
sed 's/.*\r//' "$OUT/bench.log" | grep -v Warn | tail -30
