# Call 2: inference in chunks with the window pass writing each chunk's rows into the output (no copy), against
# commit 0590f30's kernels (build/head/slkernels_head, carried) in one process (ab_forward.py), with a kernel profile
# at 256K released; the window and span passes under their tilings at 256K released (profile_passes.py --forward);
# then the GPU tests of the forward (long sampled rows, inference in chunks, chunked prefill, the forward grid).
source scripts/checkout_on_path.sh && importable_here $PWD
export PYTHONPATH=$PWD/build/head:$PYTHONPATH
D=benchmarks/results/side-stream-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call2.txt
for c in "released 262144 slkernels_head 9 --profile" "released 131072 slkernels_head 9" \
         "released 65536 slkernels_head 11" "balanced 262144 slkernels_head 9"; do
  timeout 120 python -u $D/ab_forward.py $c 2>&1 | grep -v Warn | tee -a $OUT/ab-call2.jsonl
done
timeout 150 python -u benchmarks/profile_passes.py released 262144 --forward 2>&1 | grep -v Warn | tee $OUT/passes-call2.log
timeout 200 python -u -m pytest -q tests/test_triton_gpu.py -k "inference_in_chunks or chunked_prefill or long_sampled or forward_grid" \
  2>&1 | tail -5 | tee $OUT/gpu-tests-call2.log
