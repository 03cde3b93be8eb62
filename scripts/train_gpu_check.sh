#!/usr/bin/env bash
# Training on one GPU at 32K context with the Nemotron-3-Nano attention shape (H_q 32, H_kv 2, D 128):
# a short router warm-up and a short retrieval-curriculum run, each printing tokens/s and peak memory.
# With two or more GPUs it also runs the curriculum with DDP on two of them and compares the loss curve
# with the one-GPU run.
#
#   scripts/train_gpu_check.sh [WORKDIR]         (default WORKDIR: ./train-gpu-check)
#   SEQ_LEN=65536 STEPS=8 scripts/train_gpu_check.sh
#
# The model is built from a config (random weights, 4 layers: Mamba-2, attention, MoE, attention; the two
# attention layers are converted with the paper's released setting), so no download is needed.
set -euo pipefail
WORK=${1:-train-gpu-check}
SEQ_LEN=${SEQ_LEN:-32768}
STEPS=${STEPS:-6}
PY=${PYTHON:-python}
mkdir -p "$WORK"
rm -rf "$WORK"/warmup "$WORK"/curriculum "$WORK"/ddp
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if ! $PY -c "import slconvert, slkernels" 2>/dev/null; then  # not installed: import it from this checkout
  source "$ROOT/scripts/checkout_on_path.sh"
  checkout_on_path "$ROOT"
fi

$PY - "$WORK" <<'PYEOF'
import shutil, sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from slconvert.surgery import convert, plan_conversion
from slconvert.tiny import build_tokenizer, tiny_config
from slkernels import SuperlinearConfig

work = Path(sys.argv[1])
src, out = work / "source", work / "converted"
if (out / "config.json").is_file():
    print(f"reusing {out}")
    raise SystemExit
shutil.rmtree(src, ignore_errors=True)
config = tiny_config("nemotron_h", hidden=1024, layers="MAEA")
config.num_attention_heads, config.num_key_value_heads, config.head_dim = 32, 2, 128
config.chunk_size = 128
config.max_position_embeddings = 1 << 20
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(src)
build_tokenizer(src)
convert(plan_conversion(src, SuperlinearConfig.released()), out, force=True, progress=False)
print(f"built {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
PYEOF

MODEL="$WORK/converted"
report() {  # report RUN_DIR LABEL: mean tokens/s and peak memory over the steps after the first
  $PY -I "$ROOT/scripts/training_report.py" "$1" "$2"
}

$PY -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', '| torch', torch.__version__)"
COMMON=(--model "$MODEL" --quiet max_steps=$STEPS batch_size=1 save_every=0 warmup_steps=1 recall_every=0)

$PY -m slconvert.cli train recipes/router-warmup.yaml --output "$WORK/warmup" "${COMMON[@]}" \
  seq_len=$SEQ_LEN curriculum=[] recall_rows=256
report "$WORK/warmup" "router warm-up (routers only, KL)"

CURRICULUM=("curriculum=[{seq_len: $SEQ_LEN, steps: $STEPS}]" recall_rows=256 trainable=attention
            gradient_checkpointing=true "data.niah_tasks=[single, multikey, multivalue]")
$PY -m slconvert.cli train recipes/niah-curriculum.yaml --output "$WORK/curriculum" "${COMMON[@]}" "${CURRICULUM[@]}"
report "$WORK/curriculum" "curriculum (attention layers, LM + KL, grad checkpointing)"

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  rm -rf "$WORK/one" "$WORK/ddp"
  PAIR=(--quiet --model "$MODEL" max_steps=$STEPS batch_size=2 save_every=0 warmup_steps=1 recall_rows=0
        "${CURRICULUM[@]}")
  CUDA_VISIBLE_DEVICES=0 $PY -m slconvert.cli train recipes/niah-curriculum.yaml --output "$WORK/one" "${PAIR[@]}"
  accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 \
    -m slconvert.cli train recipes/niah-curriculum.yaml --output "$WORK/ddp" "${PAIR[@]}"
  report "$WORK/one" "one GPU, batch 2 (2 micro-batches accumulated)"
  report "$WORK/ddp" "DDP on two GPUs, batch 2 (1 micro-batch each)"
  $PY - "$WORK/one" "$WORK/ddp" <<'PYEOF'
import json, sys
def losses(d):
    return [json.loads(l)["loss"] for l in open(f"{d}/metrics.jsonl") if '"event"' not in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
print(f"loss curves, one GPU vs DDP: max |difference| = {max(abs(x - y) for x, y in zip(a, b)):.2e} over {len(a)} steps")
PYEOF
else
  echo "one GPU only: skipping the DDP comparison"
fi
