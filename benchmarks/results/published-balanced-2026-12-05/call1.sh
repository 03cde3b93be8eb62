# One device call: `slconvert bench` of the balanced forward at 16K, 64K and 256K with the published kernels installed
# (superlinear 0.1.0, its wheel fetched beforehand into .whl/ and carried to the machine; installed for this run only).
source scripts/checkout_on_path.sh && importable_here $PWD
python -m pip install -q --no-index --no-deps --target /tmp/slpub .whl/superlinear-0.1.0-py3-none-any.whl
export PYTHONPATH=/tmp/slpub:$PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton, importlib.metadata as m; print(torch.__version__, triton.__version__, 'superlinear', m.version('superlinear'))" | tee -a $OUT/card-call1.txt
(cd /tmp && timeout 300 python -m slconvert.cli bench --pass forward --setting balanced \
  --lengths 16K,64K,256K --no-million --out $OUT/bench) 2>&1 | grep -v Warn | tee $OUT/bench.log | tail -40
