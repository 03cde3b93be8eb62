# Call 7: `slconvert bench` with its queued columns (calls launched back to back, synchronised once, per call) of the
# forward and forward+backward at 16K-64K, both settings, dense SDPA the same way in the same process.
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call7.txt
(cd /tmp && timeout 240 python -m slconvert.cli bench --pass forward --pass forward_backward --lengths 16K,32K,64K \
  --no-million --out $OUT/bench-call7) 2>&1 | grep -v Warn | tail -16 | sed 's/.*\r//' > $OUT/bench-call7.log
tail -14 $OUT/bench-call7.log
