"""Documents of the shipped lm-eval tasks (`evals/tasks/slc_*.yaml`), built here so that they share one home with
the needle prompts of `slconvert eval --niah` and the needle format that training samples use.

Every needle task keeps the needle sentence, question and answer prefix of the "slconvert" prompt style, the format
the training recipes (and so the shipped tiny teacher) learn from: "One of the special magic numbers for KEY is:
VALUE." What the tasks vary is what surrounds that needle:

* ``single``: the built-in varied-sentence haystack (`slconvert eval --niah --niah-style slconvert`);
* ``passkey``: the classic pass-key filler, a few plain sentences repeated (`... --haystack repeat`);
* ``multikey``: the built-in haystack with three more needles under other keys whose values are words
  (``distractor_kind``), so a model must pick the one numeric needle among several. With
  ``distractor_kind="numbers"`` only the key tells them apart (`--niah --niah-style slconvert --task multikey`).

Each prompt is exactly its length in tokens of the model's own tokenizer (special tokens included), with the asked
needle at depths spread evenly from 0 to 100%.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SlconvertError
from .haystack import SyntheticHaystack, load_haystack
from .niah import VALUE_KINDS, build_sample

__all__ = ["NeedleDocuments", "NEEDLE_DOCUMENTS", "needle_documents", "long_documents"]


@dataclass(frozen=True)
class NeedleDocuments:
    """One shipped needle task: the needle task of `niah.TASKS`, its haystack and its distractors' value kind."""

    task: str
    haystack: str
    distractor_kind: str | None = None


NEEDLE_DOCUMENTS: dict[str, NeedleDocuments] = {
    "single": NeedleDocuments("single", "builtin"),
    "passkey": NeedleDocuments("single", "repeat"),
    "multikey": NeedleDocuments("multikey", "builtin", distractor_kind="words"),
}


def needle_documents(tokenizer, name: str, lengths: list[int], num_samples: int = 10, seed: int = 0, *,
                     distractor_kind: str | None = None) -> list[dict]:
    """Rows {input, answer, outputs, length, depth} of the shipped needle task `name`, `num_samples` per length.

    `input` is the whole prompt (greedy generation continues it), `answer` the gold continuation and `outputs`
    the values that string matching looks for. distractor_kind overrides the task's own.
    """
    if name not in NEEDLE_DOCUMENTS:
        raise SlconvertError(f"unknown shipped needle task {name!r}; choose one of {', '.join(NEEDLE_DOCUMENTS)}")
    if num_samples < 1:
        raise SlconvertError(f"num_samples is {num_samples}; give at least 1 prompt per length")
    if distractor_kind is not None and distractor_kind not in VALUE_KINDS:
        raise SlconvertError(f"distractor_kind {distractor_kind!r} is not a needle kind; choose one of "
                             f"{', '.join(VALUE_KINDS)} (task metadata, e.g. '{{\"distractor_kind\": \"numbers\"}}')")
    spec = NEEDLE_DOCUMENTS[name]
    haystack = load_haystack(spec.haystack, seed=seed)
    rows = []
    for length in lengths:
        for index in range(num_samples):
            depth = 100.0 * index / max(num_samples - 1, 1)  # needles spread evenly over the context
            sample = build_sample(tokenizer, haystack, spec.task, length, depth, index, seed=seed,
                                  distractor_kind=distractor_kind or spec.distractor_kind)
            rows.append({"input": sample.prompt, "answer": sample.answer, "outputs": sample.expected,
                         "length": length, "depth": depth})
    return rows


def long_documents(chars: int = 32000, count: int = 8) -> list[dict]:
    """Rows {text}: long pseudo-English documents of at most `chars` characters, ending at a sentence's end."""
    rows = []
    for index in range(count):
        text = SyntheticHaystack(1000 + index).text(chars)[:chars]
        rows.append({"text": text[: text.rfind(".") + 1] or text})
    return rows
