# Call 3: the search's candidates cut into pieces, so that the rows in flight gather keys from a shorter range
# (search_split.py: one inference chunk's rows and the whole length, released and balanced at 256K).
source scripts/checkout_on_path.sh && importable_here $PWD
D=benchmarks/results/search-beside-window-h200-2026-12-04
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card-call3.txt
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/card-call3.txt
for c in "released 262144 9" "balanced 262144 9"; do
  timeout 200 python -u $D/search_split.py $c 2>&1 | grep -v -i warn | tee -a $OUT/search-split-call3.jsonl
done
