# One device call (the session's fourth): the whole kernel benchmark on the code of commit 622d824 (`slconvert bench`,
# both settings, forward, forward+backward and decode at 16K-256K, and the 1M-token chunked prefill and decode).
source scripts/checkout_on_path.sh && importable_here $PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call4.txt
timeout 560 python -m slconvert.cli bench --out $OUT/bench 2>&1 | grep -v Warn | tail -60 > $OUT/bench-call4.log; tail -30 $OUT/bench-call4.log
