# One device call (the session's sixth): the tree with the search's lists read from L2 (".cg") in `_top_of_pieces`
# (slkernels) against commit 622d824 (slk_old), decode at 16K-1M (16 steps per graph, 16 layers); then the decode GPU
# tests and the GPU tests of generation through converted models on the tree.
source scripts/checkout_on_path.sh && importable_here $PWD
mkdir -p old-kernels/slk_old && git archive 622d824 kernels | tar -x --strip-components=1 -C old-kernels/slk_old
export PYTHONPATH=$PWD/old-kernels:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call6.txt
(cd /tmp && timeout 150 python $OLDPWD/benchmarks/compare_passes.py --decode --packages slkernels,slk_old \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn > $OUT/compare-call6.log; grep -c ms $OUT/compare-call6.log
(cd tests && timeout 130 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -k decode test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-decode-call6.log
timeout 160 python -m pytest -q -p no:cacheprovider -m gpu tests/test_surgery_attention.py 2>&1 | tail -3 | tee $OUT/gpu-tests-generation-call6.log
