"""What training and evaluation both build from: needle prompts, haystacks, word lists, text file kinds.

A layer of its own so that imports run one way: commands -> training / evaluation -> tasks. Nothing
here loads a model; everything is a pure function of a tokenizer, a seed and the user's text.

Modules: `text` (which files count as text), `wordlists` (needle keys and built-in sentences),
`haystack` (filler text: generated, repeated, RULER's noise, the user's files or essays), `niah` (needle
tasks, templates in both prompt styles, exact-length prompts and their string-match scoring), `documents` (the
documents of the shipped lm-eval tasks in `evals/tasks`).
"""
