"""Evaluation of converted models next to their source: needle grids, lm-eval tasks, perplexity, span recall.

Modules, one job each: `haystack` (filler text), `niah` (exact-length needle prompts and scoring),
`niah_run` (grids), `models` (loading and forward helpers), `perplexity`, `span_recall`, `lmeval`
(guarded lm-eval model), `report` / `plots` (files and figures), `runner` (one function per mode).
"""
