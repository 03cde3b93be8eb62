# One device call: the partial kernel's program orders (decode.CHUNK_ORDER), with and without programmatic
# dependent launch.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
R=benchmarks/results/decode-pdl-order-h200-2026-12-02
(cd /tmp && timeout 250 python $OLDPWD/$R/order_sweep.py) 2>&1 | grep -v Warn | tee $OUT/order-sweep.log
