# Call 1: the anchor key's gate backward, sorted key side against atomic adds (benchmarks/gate_bwd.py): exactness,
# times at 256K released (four tilings) with the whole backward, forward + backward and a kernel profile, then
# balanced 256K and released 64K; then the GPU gradient tests of the anchor key at head dim 128 (bf16 and fp16).
# (Ran with gate_bwd.py in benchmarks/ and gate-sorted.patch applied to kernels/; neither is in the tree now.)
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call1.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call1.txt
cd benchmarks
timeout 300 python -u gate_bwd.py released:262144 --blocks 32,64 16,64 64,64 32,128 --backward --profile \
  --json $OUT/gate-call1-released256k.json 2>&1 | grep -v Warn | tee $OUT/gate-call1.log
timeout 120 python -u gate_bwd.py balanced:262144 released:65536 released:16384 --blocks 32,64 16,64 \
  --json $OUT/gate-call1-others.json 2>&1 | grep -v Warn | tee -a $OUT/gate-call1.log
cd ..
timeout 150 python -u -m pytest -q -x tests/test_triton_gpu.py -k "gradients and not span_mean and 128" 2>&1 \
  | tail -5 | tee $OUT/gpu-tests-call1.log
