# One device call on the code as committed (WS_TILES (64, 128, 2, 240, 0), WS_SPAN_MIN_KEYS 3072): the GPU tests that
# run the warp-specialised span pass (forced) and the five at 256K (three released, where the rule picks it), then
# `slconvert bench` forward, released, 128K / 256K and the 1M prefill in 32K chunks, with the rule (ws) and with the
# tl pass (tl).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
(cd tests && timeout 240 python -m pytest -q -p no:cacheprovider --rootdir $PWD -c /dev/null \
  -k "warp_specialised or 262144 or inference_in_chunks" test_triton_gpu.py) 2>&1 | tail -3 | tee $OUT/gpu-tests-call4.log
for keys in 3072 0; do
  name=$([ $keys = 0 ] && echo tl || echo ws)
  (cd /tmp && timeout 150 python -c "
import sys, slkernels.triton_ops.function as fn
fn.WS_SPAN_MIN_KEYS = $keys
from slconvert.cli import main
sys.exit(main(['bench', '--setting', 'released', '--pass', 'forward', '--lengths', '128K,256K', '--out', '$OUT/bench-$name']))
") 2>&1 | grep -v Warn | tail -14 | tee $OUT/bench-$name-call4.log
done
