# Call 2: where a released forward + backward goes at 16K and 32K (profile_step.py, beside dense SDPA), and the
# forward's window pass on the warp-specialised kernel against the `tl` one (window_ws.py).
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/bwd-glue-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call2.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call2.txt
for c in "released 16384" "released 32768" "balanced 16384"; do
  set -- $c
  timeout 150 python -u $D/profile_step.py $1 $2 --json $OUT/profile-call2-$1-$2.json 2>&1 | grep -v Warn | tee -a $OUT/profile-call2.log
done
timeout 200 python -u $D/window_ws.py released:16384 released:65536 released:262144 balanced:262144 2>&1 | grep -v Warn \
  | tee $OUT/window-ws-call2.jsonl
