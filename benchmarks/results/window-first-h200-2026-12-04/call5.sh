# Call 5: the span lists sorted as one flat list (commit b4e9d9b) against commit fe05404's kernels
# (build/base/slkernels_base, carried) in one process at 256K and 64K released (ab_long.py).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/base:$PYTHONPATH
D=benchmarks/results/window-first-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
for n in 262144 65536; do timeout 200 python $D/ab_long.py $n slkernels_base 10 | tee -a $OUT/ab-long-call5.jsonl; done
