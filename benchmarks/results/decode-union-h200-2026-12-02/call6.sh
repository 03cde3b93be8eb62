# Device call 6 (the same machine, warm): the GPU tests of generation through converted models.
source scripts/checkout_on_path.sh && importable_here $PWD && (cd tests && timeout 240 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null -m gpu test_surgery_attention.py) 2>&1 | tail -3 | tee $OUT/gpu-generation-call6.log
