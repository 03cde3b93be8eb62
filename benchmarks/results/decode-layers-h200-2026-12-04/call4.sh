# Call 4 (same machine as call 3): the GPU tests of the other paths that take the span lists or the cached device
# capability: the warp-specialised passes, the span-mean forward at long lengths, bf16 span-mean gradients and chunked
# prefill, every decode test (programmatic dependent launch, graphs, eager replay).
source scripts/checkout_on_path.sh && importable_here $PWD
(cd tests && timeout 400 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf -k "warp_specialised or span_mean_forward_long or (span_mean_gradients and bfloat16) or test_decode or eager_decode or programmatic or span_mean_chunked" test_triton_gpu.py) > $OUT/gpu-tests-call4.log 2>&1
