# Call 2, on the code as committed (WS_KEY_PASS on, WS_DKDV_TILES (64, 64, 3, 232, 40)): the GPU tests whose
# gradients now run dk/dv on the warp-specialised kernel (head dim 128, 16-bit), then `slconvert bench`, forward and
# forward+backward, both settings, 16K-256K, and forward+backward again with the `tl` dk/dv kernel (WS_KEY_PASS off).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
(cd tests && timeout 170 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "(gradients and 128) or warp_specialised" test_triton_gpu.py) 2>&1 | tail -4 | tee $OUT/gpu-tests-call2.log
(cd /tmp && timeout 250 python -m slconvert.cli bench --pass forward --pass forward_backward --no-million \
  --out $OUT/bench-ws) 2>&1 | grep -v Warn | tail -24 | tee $OUT/bench-ws-call2.log
(cd /tmp && timeout 150 python -c "
import sys, slkernels.triton_ops.function as fn
fn.WS_KEY_PASS = False
from slconvert.cli import main
sys.exit(main(['bench', '--pass', 'forward_backward', '--no-million', '--out', '$OUT/bench-tl']))
") 2>&1 | grep -v Warn | tail -14 | tee $OUT/bench-tl-call2.log
