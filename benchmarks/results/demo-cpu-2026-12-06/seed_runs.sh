#!/bin/bash
# One run of the demo's conversion, training and NIAH grid with recipe overrides, one thread, from the repository root:
#   bash benchmarks/results/demo-cpu-2026-12-06/seed_runs.sh TAG [KEY=VALUE ...]     e.g. s1 seed=1
# Writes seed-runs/TAG/ (converted/, run/, eval/) and prints the grid's average (accuracy.py). As run here, two at a
# time on the 2-core machine (THREADS=1 each).
TAG=$1; shift
cd "$(git rev-parse --show-toplevel)" || exit 1
PY=${PY:-.venv/bin/python}
S="--sw-index 3 --search-power 0.5 --span-power 0.5 --backward-factor 2 --forward-factor 1 --search-key span_mean"
O=${OUTDIR:-seed-runs}/$TAG; rm -rf "$O"; mkdir -p "$O"
export OMP_NUM_THREADS=${THREADS:-1}
$PY -m slconvert.cli convert slconvert/assets/tiny-teacher "$O/converted" $S --quiet > /dev/null
$PY -m slconvert.cli train recipes/demo-curriculum.yaml --model "$O/converted" --output "$O/run" --quiet "$@" > "$O/train.log" 2>&1
$PY -m slconvert.cli eval "$O/run" --niah --niah-style slconvert --lengths 256,512 --depths 0,25,50,75,100 --samples 4 \
    --out "$O/eval" > "$O/eval.log" 2>&1
$PY "$(dirname "$0")/accuracy.py" "$O"
