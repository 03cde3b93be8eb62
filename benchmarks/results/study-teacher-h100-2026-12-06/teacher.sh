#!/usr/bin/env bash
# The study teacher trained again (recipes/study-teacher.yaml, stopped at step 2041), for a second seed of the
# conversion study's run 13 setting on a fresh machine. Run twice on one machine: the first call is cut by the
# teacher's 7.5-minute limit and leaves a checkpoint, the second continues it to step 2041, measures its NIAH at 2K
# and 8K and writes its int8 copy (study-teacher.tar.part-*) and Triton's tuning results (triton-tuned.tgz) to OUT.
#   bash benchmarks/results/study-teacher-h100-2026-12-06/teacher.sh OUT_DIR
OUT=${1:?OUT_DIR}
mkdir -p "$OUT"
OUT=$OUT timeout -k 10 580 scripts/study_gpu_check.sh teacher 2>&1 | tee "$OUT/teacher-part.log"
