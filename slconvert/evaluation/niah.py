"""Scoring needle prompts; the prompts themselves are built by `slconvert.tasks.niah` (shared with training).

Generated answers are scored by string match (`score_sample`, RULER's string_match_all in its style);
teacher-forced scoring, which needs the model's logits, lives here.
"""

from __future__ import annotations

import torch

from ..errors import SlconvertError
from ..tasks.niah import (
    STYLES,
    TASKS,
    TEMPLATES,
    VALUE_KINDS,
    NiahSample,
    TaskSpec,
    Template,
    build_sample,
    generation_budget,
    prompt_length,
    score_generation,
    score_sample,
)

__all__ = ["score_teacher_forced", "score_generation", "score_sample", "generation_budget", "build_sample",
           "prompt_length", "NiahSample", "Template", "TaskSpec", "TASKS", "TEMPLATES", "VALUE_KINDS", "STYLES"]


def score_teacher_forced(logits: torch.Tensor, answer_ids: list[int]) -> dict:
    """Teacher-forced exact match: does the argmax predict every answer token given the gold prefix?

    `logits` are the model's outputs on prompt + answer, [L, V]; the answer is the last
    len(answer_ids) tokens. exact is 1.0 iff greedy decoding would have produced the whole answer.
    """
    n = len(answer_ids)
    if n == 0:
        raise SlconvertError("empty answer: nothing to score")
    scored = logits[-n - 1: -1].float().cpu()
    predicted = scored.argmax(dim=-1).tolist()
    correct = [int(p == a) for p, a in zip(predicted, answer_ids)]
    log_probs = torch.log_softmax(scored, dim=-1)
    answer_logprob = float(log_probs[torch.arange(n), torch.tensor(answer_ids)].sum())
    return {"exact": float(all(correct)), "token_accuracy": sum(correct) / n, "answer_logprob": answer_logprob}
