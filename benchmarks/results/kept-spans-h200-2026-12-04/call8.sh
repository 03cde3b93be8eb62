# Call 8 (commit 76bc43b): the forward tests that run the warp-specialised span pass through `run_entries_ws` (whose
# mode checks and tile defaults changed with MODE_DQ): long sampled rows of both keys, the span pass forced at every
# length, inference in chunks at 256K, chunked prefill.
source scripts/checkout_on_path.sh && importable_here $PWD
timeout 230 python -u -m pytest -q tests/test_triton_gpu.py -k "forward_long_sampled_rows or warp_specialised_span_pass or inference_in_chunks or chunked_prefill" 2>&1 \
  | tail -4 | tee $OUT/gpu-tests-call8.log
