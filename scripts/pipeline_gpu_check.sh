#!/usr/bin/env bash
# `make pipeline` on a GPU machine, stage by stage, on a checkpoint with the layer structure and sizes of
# NVIDIA-Nemotron-3-Nano-30B-A3B (52 layers: 23 Mamba-2, 23 MoE, 6 attention with 32 query / 2 KV heads
# of 128; hidden 2688; vocabulary 131072) and random weights, so nothing is downloaded. Prints the wall
# time of every stage and the peak GPU memory of the training stages: the numbers of the README's guide.
#
#   scripts/pipeline_gpu_check.sh [WORKDIR]              (default WORKDIR: ./pipeline-gpu-check)
#   EXPERTS=128 SEQ_LEN=65536 STEPS=8 scripts/pipeline_gpu_check.sh
#
# EXPERTS (default 16): routed experts per MoE layer. The real model has 128 (31.6B parameters, 63 GB in
# bf16); every token still reaches 6 of them, so compute per token is that of the real model and the
# memory of the real model is this run's plus the weights of the missing experts (printed).
# MODEL: run on this checkpoint instead (e.g. slconvert/assets/tiny-teacher); SETTINGS: conversion settings (default:
# the Makefile's, the released setting with the span-mean search key).
# STAGE_TIMEOUT: seconds allowed per stage; progress.txt in WORKDIR says how far the run got.
# LAUNCH: how training runs (default: accelerate with one process; with NPROC=2, DDP on two GPUs, or the
# launch configuration ACCEL_CONFIG, e.g. configs/accelerate/fsdp.yaml).
# TRAIN_EXTRA: more recipe overrides for both training stages (FSDP needs router_kl_weight=0).
# STAGES: the stages to run (default: all six); RUN: the pipeline's OUT folder (default WORKDIR/run), which
# a partial STAGES list reads from, e.g. STAGES=curriculum on a RUN that holds converted/ and warmup/.
# The machine needs torch, transformers, accelerate and Triton.
set -euo pipefail
WORK=${1:-pipeline-gpu-check}
EXPERTS=${EXPERTS:-16}
SEQ_LEN=${SEQ_LEN:-32768}
STEPS=${STEPS:-4}
NPROC=${NPROC:-1}
ACCEL_CONFIG=${ACCEL_CONFIG:-configs/accelerate/ddp.yaml}
STAGES=${STAGES:-inspect convert warmup curriculum evaluate summary}
EVAL_LENGTHS=${EVAL_LENGTHS:-8192,32768}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
VENV=$WORK/venv
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
STAGE_TIMEOUT=${STAGE_TIMEOUT:-0}  # seconds per stage (0: none); a stage past it is killed with its children
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/progress.txt"; }
log "pipeline check in $WORK (EXPERTS=$EXPERTS SEQ_LEN=$SEQ_LEN STEPS=$STEPS NPROC=$NPROC)"

# The machine has no network: instead of a pip install, VENV/bin holds wrappers that run the system's
# Python with this checkout importable (what `make` calls: python, slconvert, accelerate).
REALPY=$(command -v "$PY")
mkdir -p "$VENV/bin"
source "$ROOT/scripts/checkout_on_path.sh"
checkout_on_path "$ROOT" "$WORK/links"
# PYTHONSAFEPATH: `python -m` must not put the repository root on sys.path, where kernels/ would shadow the
# Hugging Face `kernels` package that transformers probes for.
wrap() { printf '#!/usr/bin/env bash\nexport PYTHONPATH="%s" PYTHONSAFEPATH=1\nexec "%s" %s "$@"\n' "$PYTHONPATH" "$REALPY" "$2" > "$VENV/bin/$1"
         chmod +x "$VENV/bin/$1"; }
wrap python ""
wrap slconvert "-m slconvert.cli"
wrap accelerate "-m accelerate.commands.accelerate_cli"
touch "$VENV/.slconvert-installed"  # tells make that the install step is done
"$VENV/bin/python" -c "import torch, triton, transformers; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU', \
'| torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__)"

log "environment ready; building the source checkpoint"
SOURCE=${MODEL:-$WORK/source}  # MODEL=path: run the pipeline on that checkpoint instead
# The Nano shape lives in scripts/build_nano_shape.py (also used for the whole-model benchmark).
[[ -n ${MODEL:-} ]] || "$VENV/bin/python" scripts/build_nano_shape.py "$WORK/source" --experts "$EXPERTS"

LAUNCH=${LAUNCH:-"$VENV/bin/accelerate launch --num_processes $NPROC --mixed_precision bf16 -m slconvert.cli"}
[[ $NPROC -gt 1 ]] && LAUNCH="$VENV/bin/accelerate launch --config_file $ACCEL_CONFIG --num_processes $NPROC -m slconvert.cli"
TRAIN="max_steps=$STEPS seq_len=$SEQ_LEN curriculum=[] batch_size=$NPROC micro_batch_size=1 warmup_steps=1 save_every=0 ${TRAIN_EXTRA:-}"
RUN=${RUN:-$WORK/run}
ARGS=(VENV="$VENV" MODEL="$SOURCE" OUT="$RUN" LAUNCH="$LAUNCH"
      CONVERT_ARGS="--dtype bfloat16 --quiet"
      WARMUP_ARGS="$TRAIN recall_every=0 recall_rows=256 --quiet"
      CURRICULUM_ARGS="$TRAIN recall_every=0 recall_rows=0 --quiet"
      EVAL_ARGS="--niah --lengths $EVAL_LENGTHS --depths 50 --samples 1 --max-length $((SEQ_LEN * 2))")
[[ $STAGES == inspect* ]] && rm -rf "$RUN"
for stage in $STAGES; do
  log "stage $stage (log: $WORK/$stage.log)"
  start=$SECONDS
  limit=()
  [[ $STAGE_TIMEOUT -gt 0 ]] && limit=(timeout -k 10 "$STAGE_TIMEOUT")
  ${limit[@]+"${limit[@]}"} make --no-print-directory "$stage" "${ARGS[@]}" > "$WORK/$stage.log" 2>&1 \
      || { tail -30 "$WORK/$stage.log"; log "stage $stage failed or timed out"; exit 1; }
  printf '%-10s %5d s\n' "$stage" "$((SECONDS - start))" | tee -a "$WORK/stages.txt"
done
REPORT=()
for stage in warmup curriculum; do [[ -d $RUN/$stage ]] && REPORT+=("$RUN/$stage" "$stage"); done
[[ ${#REPORT[@]} -gt 0 ]] && "$VENV/bin/python" -I scripts/training_report.py "${REPORT[@]}"
du -sh "$SOURCE" "$RUN/converted" | sed 's/^/size: /'
