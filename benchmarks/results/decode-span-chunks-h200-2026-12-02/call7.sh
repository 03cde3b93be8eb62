# One device call (the session's seventh; call 6's comparison found no commit 622d824 on the device): the tree with the
# search's lists read from L2 (".cg") in `_top_of_pieces` (slkernels) against commit 622d824 (slk_old, unpacked here
# with `git archive 622d824 kernels` into old-kernels/slk_old and carried), decode at 16K-1M (16 steps per graph,
# 16 layers).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call7.txt
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call7.log; grep -c ms $OUT/compare-call7.log
