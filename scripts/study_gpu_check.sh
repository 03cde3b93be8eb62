#!/usr/bin/env bash
# The conversion study on the study teacher, on one GPU, in parts that each fit a bounded command (a machine that
# allows a few minutes per command and keeps its files between commands):
#
#   scripts/study_gpu_check.sh teacher       # the study's dense teacher into $WORK/teacher (run it again until it
#                                            # says the teacher is ready)
#   JOBS="control=mixers:1e-3 ordered=mixers:1e-3:data.needle_order=answer" scripts/study_gpu_check.sh study
#                                            # one study per job, side by side, on that teacher (about 9.5 min)
#   JOBS='staged=mixers:1e-3:curriculum=[{"seq_len":4096,"steps":2700},{"seq_len":16384,"steps":900,"batch_size":2}]' \
#     scripts/study_gpu_check.sh study       # overrides are YAML: a curriculum in JSON's spelling has no spaces,
#                                            # at which JOBS splits (a stage's own batch_size holds its tokens per step)
#   JOBS="control ordered" scripts/study_gpu_check.sh resume
#                                            # each of those studies continued where its time limit cut it
#   JOBS="control ordered" scripts/study_gpu_check.sh answers
#                                            # the teacher and each study's final model on more prompts per cell
#
# `teacher` trains teacher 0 of benchmarks/results/study-teacher-h200-2026-11-30/ again: recipes/study-teacher.yaml,
# which stops at step 2041 of its 2400-step schedule, where teacher 0's time limit stopped it (TEACHER_STOP=N: at
# step N). Each command trains for at most TEACHER_MINUTES (default 7.5) and leaves a checkpoint; the next `teacher`
# continues from it. The finished teacher's NIAH at 2K and 8K goes to $OUT, and its int8 copy
# (scripts/int8_copy.py) to $OUT/study-teacher.tar.part-* (unpack here with `cat study-teacher.tar.part-* | tar xf -`
# in the checkout): carry that `.study-teacher` folder to a fresh machine and `teacher` rebuilds the float32 teacher
# from it in seconds instead of training it. `study` runs one
# `conversion_study.py run` per JOBS entry NAME=PRESET:LR[:OVERRIDE;OVERRIDE...] at the balanced shape with the
# span-mean key on the curriculum's needle mix (as study-teacher-run-7: 8 x 4096 tokens per step, STEPS steps,
# evaluations at EVALS, NIAH single / multikey / multivalue at 2K-16K), all at once (each study measures its teacher
# row beside its job: PARALLEL=2), each stopped after JOB_MINUTES of training or RESERVE seconds (default 150: its
# last measurement) before the part's DEADLINE, whichever comes first. A job cut by its time limit leaves a checkpoint:
# `resume` continues it (`conversion_study.py run --resume`, the study's own settings) for another JOB_MINUTES, so a
# schedule of STEPS can span several commands. Each study's folder (models left out) is packed into $OUT/NAME.tgz;
# logs and the teacher's report go to $OUT too. TEACHER_ROW=FOLDER takes every study's teacher row from an earlier
# study of the same teacher and prompts (`run --teacher-row`; e.g. a study folder under benchmarks/results/ of the
# teacher that .study-teacher rebuilds) instead of measuring it beside each job. SEED (default 0) is each study's
# `--seed`, the recipe's seed (data stream and RNGs) and the prompts'; a job's own `seed=N` among its overrides
# replaces it for that job (JOBS="s1=mixers:1e-3:seed=1 s2=mixers:1e-3:seed=2": two seeds side by side).
# A job that ends without its study folder has the end of its log printed.
# fla-core comes from the environment or from the wheel in .whl/ (`importable_here`, scripts/checkout_on_path.sh).
# `answers` measures the teacher and the final model of each study of JOBS side by side on ANSWER_ARGS (default: the
# study's lengths with 4 samples per depth, 20 prompts per cell, the study's 10 among them) and compares them cell by
# cell (`conversion_study.py answers`, `compare`); everything goes to $OUT/answers.tgz. TEACHER_ANSWERS=FILE takes
# the teacher's answers from an earlier `answers` of the same teacher and ANSWER_ARGS instead of measuring them.
# ATTENTION_LENGTHS="4096 16384" adds, per study and length, where each final model's converted layers look when
# they write a multivalue answer (scripts/answer_attention.py: the router's spans against the best ones), into
# answers.tgz as attention-NAME-LENGTH.json and .png.
# Triton's tuning results of fla-core's kernels (minutes to find on a fresh machine) are restored from $TUNED (default
# ./.triton-tuned) and every part packs them into $OUT/triton-tuned.tgz (unpack with `tar xzf` in the checkout, then
# carry `.triton-tuned`).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHAT=${1:?usage: scripts/study_gpu_check.sh teacher|study|resume|answers}
WORK=${WORK:-/tmp/study-gpu}
OUT=${OUT:-$WORK/out}
PY=${PYTHON:-python3}
TEACHER_STOP=${TEACHER_STOP:-}
TEACHER_MINUTES=${TEACHER_MINUTES:-7.5}
TEACHER_COPY=${TEACHER_COPY:-$ROOT/.study-teacher}
TUNED=${TUNED:-$ROOT/.triton-tuned}
TEACHER_ARGS=${TEACHER_ARGS:---lengths 2048,8192 --samples 2}
STEPS=${STEPS:-1800}
EVALS=${EVALS:-600,1200,1800}
JOB_MINUTES=${JOB_MINUTES:-8}
DEADLINE=${DEADLINE:-550}
RESERVE=${RESERVE:-150}
PARALLEL=${PARALLEL:-2}
SEED=${SEED:-0}
TEACHER_ROW=${TEACHER_ROW:-}
TEACHER_ANSWERS=${TEACHER_ANSWERS:-}
ATTENTION_LENGTHS=${ATTENTION_LENGTHS:-}
ANSWER_ARGS=${ANSWER_ARGS:---lengths 2048,4096,8192,16384 --samples 4}
SHAPE_ARGS=${SHAPE_ARGS:---seq-len 4096 --batch-size 8 --lengths 2048,4096,8192,16384 --samples 2}
MIX="lm_average=sample;data.niah_tasks=[single, multikey, multivalue, multivalue, multivalue, multivalue]"
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRITON_PRINT_AUTOTUNING=0

source "$ROOT/scripts/checkout_on_path.sh"
importable_here "$ROOT" || echo "fla-core is neither installed nor in .whl/: Mamba-2 runs on transformers' fallback"
source "$ROOT/scripts/triton_tuning.sh"
tuning_restore "$TUNED"
save_tuning() {  # what this machine has tuned, for the next one: $OUT/triton-tuned.tgz holds .triton-tuned/
  rm -rf "$WORK/.triton-tuned"
  tuning_save "$WORK/.triton-tuned" > /dev/null
  tar czf "$OUT/triton-tuned.tgz" -C "$WORK" .triton-tuned
}
elapsed() { echo "[$SECONDS s] $*"; }
clean_log() { tr '\r' '\n' < "$1" | grep -v "it/s\]\|s/it\]" > "$2"; }
pack_studies() {  # each study of JOBS: its log beside its rows, its folder without models into $OUT/NAME.tgz
  for job in $JOBS; do
    name=${job%%=*}
    if [ ! -d "$WORK/study-$name" ]; then
      echo "study $name: no study folder; the end of its log:" && tail -5 "$WORK/study-$name.log"
      continue
    fi
    clean_log "$WORK/study-$name.log" "$WORK/study-$name/study-run.log"
    (cd "$WORK" && find "study-$name" -type f -size -3M ! -name '*.safetensors' ! -name '*.pt' ! -name '*.bin' \
       ! -path '*/checkpoints/*' -print0 | tar czf "$OUT/$name.tgz" --null -T -)
    grep -A6 "^| shape (W)" "$WORK/study-$name/study.md" 2>/dev/null | head -8
  done
}
teacher_cut() {  # whether the teacher's last training command ended at its time limit (the next one continues it)
  grep -q '"stopped_at_time_limit": true' "$WORK/teacher/model/training_summary.json" 2>/dev/null
}
need_teacher() {
  [ -f "$WORK/teacher/model/config.json" ] || { echo "error: no teacher in $WORK/teacher/model; run the teacher part first"; exit 2; }
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/card.txt" 2>&1

case $WHAT in
  teacher)
    if [ -f "$WORK/teacher/model/training_summary.json" ] && ! teacher_cut; then
      elapsed "the teacher in $WORK/teacher/model is ready"
    elif [ -f "$TEACHER_COPY/int8.safetensors.gz" ] && [ ! -d "$WORK/teacher/model" ]; then
      elapsed "rebuilding the teacher from its int8 copy in $TEACHER_COPY"
      $PY scripts/int8_copy.py unpack "$TEACHER_COPY" "$WORK/teacher/model" || exit 1
      elapsed "the teacher in $WORK/teacher/model is ready"
    else
      RESUME=""
      [ -d "$WORK/teacher/model/checkpoints" ] && RESUME=--resume
      elapsed "training the study teacher ${RESUME:+(continued) }for at most $TEACHER_MINUTES min"
      # shellcheck disable=SC2086  # TEACHER_ARGS is a list of options
      $PY scripts/conversion_study.py teacher --out "$WORK/teacher" $RESUME $TEACHER_ARGS \
        ${TEACHER_STOP:+"stop_at_step=$TEACHER_STOP"} "time_limit_minutes=$TEACHER_MINUTES" >> "$WORK/teacher.log" 2>&1
      rc=$?
      echo "exit $rc" >> "$WORK/teacher.log"
      clean_log "$WORK/teacher.log" "$OUT/teacher.log"
      cp "$WORK/teacher/teacher.json" "$OUT/" 2>/dev/null
      cp "$WORK/teacher/model/metrics.jsonl" "$OUT/teacher-metrics.jsonl" 2>/dev/null
      tail -5 "$OUT/teacher.log"
      if [ $rc != 0 ]; then
        elapsed "the teacher's training failed (exit $rc): see $OUT/teacher.log"
      elif teacher_cut; then
        elapsed "the time limit cut the teacher: run this part again to continue it"
      else
        rm -rf "$WORK/.study-teacher"
        $PY scripts/int8_copy.py pack "$WORK/teacher/model" "$WORK/.study-teacher" && \
          tar cf - -C "$WORK" .study-teacher | split -b 15M - "$OUT/study-teacher.tar.part-"
      fi
    fi
    save_tuning
    ;;
  study)
    need_teacher
    : "${JOBS:?set JOBS, e.g. JOBS=\"control=mixers:1e-3 ordered=mixers:1e-3:data.needle_order=answer\"}"
    for job in $JOBS; do
      name=${job%%=*}; rest=${job#*=}
      preset=${rest%%:*}; rest=${rest#*:}
      lr=${rest%%:*}; extra=""
      [ "$rest" != "$lr" ] && extra=";${rest#*:}"
      seed=$SEED kept=""  # a job's seed=N is its study's --seed, not a recipe override
      IFS=';' read -ra items <<< "${extra#;}"
      for item in "${items[@]}"; do
        case $item in seed=*) seed=${item#seed=} ;; *) kept+=";$item" ;; esac
      done
      extra=$kept
      elapsed "study $name: preset $preset, lr $lr, seed $seed, overrides '$MIX$extra'"
      rm -rf "$WORK/study-$name"
      # shellcheck disable=SC2086  # SHAPE_ARGS is a list of options
      timeout -k 10 $((DEADLINE + 40)) $PY scripts/conversion_study.py run --out "$WORK/study-$name" \
        --teacher "$WORK/teacher/model" --shapes balanced --keys span_mean --presets "$preset" --lr "$lr" \
        --steps "$STEPS" --evals "$EVALS" --seed "$seed" $SHAPE_ARGS --gpus 1 --parallel "$PARALLEL" --deadline "$DEADLINE" \
        --reserve "$RESERVE" ${TEACHER_ROW:+--teacher-row "$TEACHER_ROW"} \
        --job-minutes "$JOB_MINUTES" --no-untrained --train "$MIX$extra" > "$WORK/study-$name.log" 2>&1 &
    done
    wait
    elapsed "studies done"
    pack_studies
    save_tuning
    ;;
  resume)
    : "${JOBS:?set JOBS to the names of the studies to continue, e.g. JOBS=\"control ordered\"}"
    for job in $JOBS; do
      name=${job%%=*}
      [ -f "$WORK/study-$name/settings.json" ] || { echo "error: no study $name in $WORK; run the study part first"; exit 2; }
      elapsed "resuming study $name"
      timeout -k 10 $((DEADLINE + 40)) $PY scripts/conversion_study.py run --out "$WORK/study-$name" --resume \
        --job-minutes "$JOB_MINUTES" --deadline "$DEADLINE" --reserve "$RESERVE" --gpus 1 --parallel 1 \
        >> "$WORK/study-$name.log" 2>&1 &
    done
    wait
    elapsed "studies done"
    pack_studies
    save_tuning
    ;;
  answers)
    : "${JOBS:?set JOBS to the names of the studies whose final models to measure, e.g. JOBS=\"control\"}"
    need_teacher
    rm -rf "$WORK/answers" && mkdir -p "$WORK/answers"
    files=() models=()  # models: NAME=FOLDER of each study's final model
    elapsed "the teacher and the final model of each study of '$JOBS' on $ANSWER_ARGS"
    if [ -n "$TEACHER_ANSWERS" ]; then
      cp "$TEACHER_ANSWERS" "$WORK/answers/teacher.json" && echo "the teacher's answers from $TEACHER_ANSWERS" \
        > "$WORK/answers/teacher.log" || exit 2
    else
      # shellcheck disable=SC2086  # ANSWER_ARGS is a list of options
      $PY scripts/conversion_study.py answers "$WORK/teacher/model" --out "$WORK/answers/teacher.json" $ANSWER_ARGS \
        > "$WORK/answers/teacher.log" 2>&1 &
    fi
    for job in $JOBS; do
      name=${job%%=*}
      model=$($PY scripts/conversion_study.py best "$WORK/study-$name") || { echo "study $name: no final model"; continue; }
      files+=("$WORK/answers/$name.json") models+=("$name=$model")
      # shellcheck disable=SC2086  # ANSWER_ARGS is a list of options
      $PY scripts/conversion_study.py answers "$model" --out "$WORK/answers/$name.json" $ANSWER_ARGS \
        > "$WORK/answers/$name.log" 2>&1 &
    done
    wait
    elapsed "measured"
    for item in "${models[@]}"; do
      name=${item%%=*} model=${item#*=}
      for length in $ATTENTION_LENGTHS; do
        $PY scripts/answer_attention.py "$model" --task multivalue --length "$length" --samples 4 \
          --out "$WORK/answers/attention-$name-$length.json" > "$WORK/answers/attention-$name-$length.log" 2>&1 &
      done
    done
    wait
    [ -n "$ATTENTION_LENGTHS" ] && elapsed "answer attention at $ATTENTION_LENGTHS" && \
      grep "means per layer" "$WORK"/answers/attention-*.log
    if [ ${#files[@]} -gt 0 ]; then
      $PY scripts/conversion_study.py compare "$WORK/answers/teacher.json" "${files[@]}" \
        --out "$WORK/answers/compare.json" > "$WORK/answers/compare.md" 2>&1
      cat "$WORK/answers/compare.md"
    fi
    tar czf "$OUT/answers.tgz" -C "$WORK" answers
    ;;
  *) echo "error: unknown part '$WHAT'; use teacher, study, resume or answers"; exit 2 ;;
esac
elapsed done
