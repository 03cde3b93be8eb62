# Call 2, on the same machine right after call 1: the 1M-token chunked prefill (balanced) with both published paths,
# and 16K again (the bench needs one length).
source scripts/checkout_on_path.sh && importable_here $PWD
python -m pip install -q --no-index --no-deps --target /tmp/slpub .whl/superlinear-0.1.0-py3-none-any.whl
export PYTHONPATH=/tmp/slpub:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd /tmp && timeout 200 python -m slconvert.cli bench --pass forward --setting balanced --lengths 16K --out $OUT/bench2) \
  2>&1 | grep -v Warn | tee $OUT/bench2.log | tail -25
