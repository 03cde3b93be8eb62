"""Evaluation of converted models next to their source: needle grids, lm-eval tasks, perplexity, span recall.

Needle prompts and haystacks are built by `slconvert.tasks` (shared with training). Modules here, one job
each: `niah` (teacher-forced scoring; re-exports the prompt builder), `niah_run` (grids), `models` (loading
and forward helpers), `perplexity`, `span_recall`, `lmeval` (guarded lm-eval model, offline RULER tasks),
`report` / `plots` (files and figures), `runner` (one function per mode); `haystack` re-exports the haystacks.
"""
