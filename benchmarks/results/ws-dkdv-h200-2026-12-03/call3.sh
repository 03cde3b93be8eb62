# Call 3: `slconvert bench` forward+backward, both settings, 16K-256K, with the warp-specialised dk/dv kernel (ws)
# and with the `tl` one (WS_KEY_PASS off, tl), in two processes one after the other.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
for on in True False; do
  name=$([ $on = True ] && echo ws || echo tl)
  (cd /tmp && timeout 200 python -c "
import sys, slkernels.triton_ops.function as fn
fn.WS_KEY_PASS = $on
from slconvert.cli import main
sys.exit(main(['bench', '--pass', 'forward_backward', '--no-million', '--out', '$OUT/bench-$name']))
") 2>&1 | grep -v Warn | tail -14 | tee $OUT/bench-$name-call3.log
done
