# One device call: the GPU test of the shared-end order (bit-equal selections), then the span-mean search in row
# order and in shared-end orders (shared_ends.py) at 256K released and
# balanced and 64K released; then the whole forwards at 256K released (row order, whole chains, segments of 8).
source scripts/checkout_on_path.sh && importable_here $PWD
F=benchmarks/results/span-mean-shared-ends-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $OUT/card-call1.txt
timeout 100 python -u -m pytest -q -rf tests/test_triton_gpu.py -k shared_end_order 2>&1 | tail -5 > $OUT/gpu-tests-call1.log
(cd /tmp && timeout 300 python $OLDPWD/$F/shared_ends.py 262144 released balanced --no-forward) 2>&1 | grep -v Warn > $OUT/search-call1.log
(cd /tmp && timeout 90 python $OLDPWD/$F/shared_ends.py 65536 released --no-forward) 2>&1 | grep -v Warn >> $OUT/search-call1.log
(cd /tmp && timeout 150 python $OLDPWD/$F/shared_ends.py 262144 released --no-search) 2>&1 | grep -v Warn > $OUT/forward-call1.log
cat $OUT/gpu-tests-call1.log $OUT/search-call1.log $OUT/forward-call1.log | tail -60
