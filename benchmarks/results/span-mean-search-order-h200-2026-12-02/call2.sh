# One device call (the session's second): #18's order question at 256K released, the search in pieces in two grid
# orders (search_order.py; slk_flip: a copy of the tree's kernels with piece-fastest.patch).
source scripts/checkout_on_path.sh && importable_here $PWD
F=benchmarks/results/span-mean-search-order-h200-2026-12-02
mkdir -p old-kernels && cp -r kernels old-kernels/slk_flip && patch -s -p1 -d old-kernels/slk_flip/triton_ops < $F/piece-fastest.patch
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 200 python $OLDPWD/$F/search_order.py 262144 released) 2>&1 | grep -v Warn > $OUT/search-order-call2.log; tail -3 $OUT/search-order-call2.log
