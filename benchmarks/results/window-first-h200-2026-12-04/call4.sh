# Call 4 (commit b4e9d9b: the span lists sorted as one flat list): `slconvert bench` of the forward and
# forward+backward at 16K-256K, both settings, dense SDPA in the same process (the README table's rows).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call4.txt
(cd /tmp && timeout 540 python -m slconvert.cli bench --pass forward --pass forward_backward --no-million --out $OUT/bench) 2>&1 \
  | grep -v Warn | tail -24 | sed 's/.*\r//' > $OUT/bench-call4.log; tail -22 $OUT/bench-call4.log
