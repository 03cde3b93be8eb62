# One device call: decode steps as a model's graph holds them, 16 steps over 16 caches in one graph (time per step),
# this tree against 83d4c17 (old-kernels/slk_old), each window rule forced, and programmatic dependent launch.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call5.txt
(cd /tmp && PYTHONPATH=$OLDPWD/old-kernels:$PYTHONPATH timeout 420 python $OLDPWD/benchmarks/compare_passes.py --decode \
  --packages slkernels,slk_old --set "WINDOW_GROUPS=True" --set "WINDOW_GROUPS=False" --set "DECODE_PDL=True" \
  --layers 16 16384 32768 65536 131072 262144 1048576) 2>&1 | grep -v Warn | tee $OUT/compare-layers-call5.log
