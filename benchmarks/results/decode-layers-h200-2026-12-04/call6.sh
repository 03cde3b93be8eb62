# Call 6, on commit f11ae4e (the span lists finished in one launch): the bf16 gradient tests at head dim 128 of both
# search keys (calls 3-4 selected gradients by "bfloat16", which matches no test id: the dtypes' ids are dtype0/dtype1).
source scripts/checkout_on_path.sh && importable_here $PWD
(cd tests && timeout 150 python -u -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -rf -k "(test_gradients or test_span_mean_gradients) and dtype0 and 128" test_triton_gpu.py) > $OUT/gpu-tests-call6.log 2>&1
