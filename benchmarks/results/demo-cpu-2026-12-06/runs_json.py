"""runs.json from the run folders: each run's NIAH grid, its misses and how many of them have only the first
digit(s) of the number wrong.

    python runs_json.py RUNS DEMO_BEFORE DEMO_NOW
RUNS holds the seed_runs.sh folders by tag (as run here: /tmp/full-TAG, i.e. OUTDIR=/tmp with tags full-s1, ...;
the tags below without the prefix); DEMO_BEFORE and DEMO_NOW are the two `make demo` runs' demo-output folders."""
import json
import sys
from pathlib import Path

runs_dir, demo_before, demo_now = sys.argv[1], sys.argv[2], sys.argv[3]
RUNS = [  # (folder, settings, seed, threads, command)
    (demo_before, "make demo, lr 1e-3 (recipe before)", 0, 2, "make demo"),
    *[(f"{runs_dir}/full-{tag}", settings, seed, 1, f"seed_runs.sh full-{tag} {overrides}")
      for tag, settings, seed, overrides in [
          ("s1", "lr 1e-3", 1, "seed=1"), ("s2", "lr 1e-3", 2, "seed=2"),
          ("s0-sample", "lr 1e-3, lm_average sample", 0, "seed=0 lm_average=sample"),
          ("s2-sample", "lr 1e-3, lm_average sample", 2, "seed=2 lm_average=sample"),
          ("s0-600", "lr 1e-3, 600 steps", 0, "seed=0 max_steps=600"),
          ("s0-lr5", "lr 5e-4", 0, "seed=0 lr=5e-4"), ("s2-lr5", "lr 5e-4", 2, "seed=2 lr=5e-4"),
          ("s3-lr5", "lr 5e-4", 3, "seed=3 lr=5e-4"), ("s1-lr5", "lr 5e-4", 1, "seed=1 lr=5e-4")]],
    (demo_now, "make demo, lr 5e-4 (recipe now)", 0, 2, "make demo"),
]

out = []
for folder, settings, seed, threads, command in RUNS:
    result = json.loads((Path(folder) / "eval" / "niah_results.json").read_text())
    kinds = result["answer_kinds"]
    model = next(name for name in kinds if "source" not in name)
    misses = first_digits = 0
    for record in result["records"]:
        if record.get("model") not in (None, model) or record.get("score", 1) >= 1:
            continue
        misses += 1
        answer, expected = (record.get("output") or "").strip(), record["expected"][0]
        first_digits += answer[1:len(expected)] == expected[1:] or answer.endswith(expected[1:])
    out.append({"settings": settings, "seed": seed, "threads": threads, "command": command,
                "average": result["table"]["average"], "cells_depth_by_length": result["table"]["scores"],
                "misses": misses, "misses_with_only_the_first_digits_wrong": first_digits,
                "near_copy_share": kinds[model].get("near_copy_of_a_value")})
doc = {"machine": "2-core AMD EPYC, no GPU; torch 2.13.0+cpu, transformers 5.25.0, Triton 3.9.0",
       "task": "the demo's NIAH grid: single needle, slconvert style, lengths 256 and 512, depths 0-100 by 25, "
               "4 prompts a cell (40)",
       "training": "recipes/demo-curriculum.yaml (400 steps of 4 x 512 tokens, mixers) with the overrides named; the "
                   "tiny teacher converted at p = rho = 0.5, W = 15, spans 2/1, span-mean key",
       "runs": out}
(Path(__file__).resolve().parent / "runs.json").write_text(json.dumps(doc, indent=1))
