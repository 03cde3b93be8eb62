"""Needle-in-a-haystack prompts filled to an exact token length, and their scoring.

RULER-style: needles "One of the special magic numbers for KEY is: VALUE." hidden at sentence
boundaries of a haystack, a question at the end, and an answer prefix so that a greedy completion
starts with the value. The haystack is cut by binary search over its characters until the whole
prompt, encoded by the model's own tokenizer (special tokens included), has exactly the requested
number of tokens: a length on the heatmap is a length the model really saw, and nothing is
truncated afterwards.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import asdict, dataclass, field

import torch

from ..errors import SlconvertError
from .haystack import Haystack, sentence_starts
from .wordlists import ADJECTIVES, NOUNS

__all__ = [
    "Template", "TEMPLATES", "TaskSpec", "TASKS", "VALUE_KINDS", "NiahSample", "build_sample", "score_generation",
    "score_teacher_forced", "prompt_length",
]


@dataclass(frozen=True)
class Template:
    """The words around the haystack: header, needle sentence, and the question ending in an answer prefix."""

    header: str
    needle: str
    question_one: str
    question_all: str


TEMPLATES: dict[str, Template] = {
    "magic": Template(
        header=("Some special magic {plural} are hidden within the following text. Make sure to memorize them. "
                "I will quiz you about the {plural} afterwards.\n\n"),
        needle="One of the special magic {plural} for {key} is: {value}.",
        question_one=("\n\nWhat is the special magic {singular} for {keys} mentioned in the provided text?\n"
                      "Answer: The special magic {singular} for {keys} mentioned in the provided text is"),
        question_all=("\n\nWhat are all the special magic {plural} for {keys} mentioned in the provided text?\n"
                      "Answer: The special magic {plural} for {keys} mentioned in the provided text are"),
    ),
    "passkey": Template(
        header=("A pass key is hidden somewhere in the long text below. Find it and remember it; "
                "you will be asked for it at the end.\n\n"),
        needle="The pass key is {value}. Remember it. {value} is the pass key.",
        question_one="\n\nWhat is the pass key? The pass key is",
        question_all="\n\nWhat are the pass keys? The pass keys are",
    ),
}


@dataclass(frozen=True)
class TaskSpec:
    """One needle task: how many keys are asked, values per key, distractor needles (never asked), wording."""

    queries: int = 1
    values_per_key: int = 1
    distractors: int = 0
    template: str = "magic"


TASKS: dict[str, TaskSpec] = {
    "single": TaskSpec(),
    "multikey": TaskSpec(distractors=3),
    "multivalue": TaskSpec(values_per_key=4),
    "multiquery": TaskSpec(queries=4),
    "passkey": TaskSpec(template="passkey"),
}


def _word(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# kind -> (generator, singular noun, plural noun)
VALUE_KINDS: dict[str, tuple] = {
    "words": (_word, "word", "words"),
    "numbers": (_number, "number", "numbers"),
    "uuids": (_uuid, "uuid", "uuids"),
}

@dataclass
class NiahSample:
    """One prompt of the grid, with everything needed to score it and to reproduce it."""

    task: str
    length: int
    depth: float
    sample: int
    seed: str
    prompt: str
    input_ids: list[int]
    expected: list[str]
    answer: str  # gold continuation, e.g. " 1234567, 7654321"
    needle_chars: list[int] = field(default_factory=list)  # where each needle starts in the prompt

    def to_dict(self, with_prompt: bool = False) -> dict:
        data = asdict(self)
        data.pop("input_ids")
        if not with_prompt:
            data.pop("prompt")
        return data


def _distinct(gen, rng: random.Random, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        value = gen(rng)
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def prompt_length(tokenizer, text: str) -> int:
    """Tokens the model sees for `text`, special tokens (BOS...) included, as the model is fed."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def build_sample(
    tokenizer,
    haystack: Haystack,
    task: str,
    length: int,
    depth: float,
    sample: int = 0,
    *,
    seed: int = 0,
    key_kind: str = "words",
    value_kind: str = "numbers",
) -> NiahSample:
    """A prompt of exactly `length` tokens with the first queried needle at `depth` percent.

    Other needles (more values, more keys, distractors) go to random depths drawn from the same seed,
    so a grid cell is reproducible from (seed, task, length, depth, sample) alone.
    """
    if task not in TASKS:
        raise SlconvertError(f"unknown needle task {task!r}; choose one of {', '.join(TASKS)}")
    for kind in (key_kind, value_kind):
        if kind not in VALUE_KINDS:
            raise SlconvertError(f"unknown needle kind {kind!r}; choose one of {', '.join(VALUE_KINDS)}")
    if not 0.0 <= depth <= 100.0:
        raise SlconvertError(f"depth {depth} is outside 0..100; depths are percentages of the context")
    spec = TASKS[task]
    template = TEMPLATES[spec.template]
    tag = f"{seed}/{task}/{length}/{depth:g}/{sample}"
    rng = random.Random(tag)
    taken: set[str] = set()
    keys = _distinct(VALUE_KINDS[key_kind][0], rng, spec.queries + spec.distractors, taken)
    asked, distract = keys[: spec.queries], keys[spec.queries:]
    _, singular, plural = VALUE_KINDS[value_kind]

    needles: list[tuple[float, str]] = []  # (depth fraction, sentence)
    expected: list[str] = []
    for key in asked:
        for value in _distinct(VALUE_KINDS[value_kind][0], rng, spec.values_per_key, taken):
            expected.append(value)
            where = depth / 100.0 if not needles else rng.random()
            needles.append((where, template.needle.format(plural=plural, key=key, value=value)))
    for key in distract:
        value = _distinct(VALUE_KINDS[value_kind][0], rng, 1, taken)[0]
        needles.append((rng.random(), template.needle.format(plural=plural, key=key, value=value)))

    header = template.header.format(plural=plural)
    many = len(expected) > 1
    question = (template.question_all if many else template.question_one).format(singular=singular, plural=plural, keys=_join(asked))

    def render(cut: int, hay: str) -> tuple[str, list[int]]:
        context = hay[:cut]
        # Needles go before a sentence start; the cut end is mid-sentence, so it is no boundary.
        starts = [s for s in sentence_starts(context) if s < len(context)] or [len(context)]
        placed = []
        for order, (where, sentence) in enumerate(needles):
            target = where * len(context)
            at = min(starts, key=lambda s: (abs(s - target), s))
            placed.append((at, order, sentence))
        placed.sort()
        pieces, offsets, prev = [], [], 0
        for at, _, sentence in placed:
            pieces.append(context[prev:at])
            so_far = len(header) + sum(len(p) for p in pieces)
            if at >= len(context):  # a fixed separator, so one more haystack character is never two tokens
                pieces.append(" ")
                so_far += 1
            offsets.append(so_far)
            pieces.append(sentence + (" " if at < len(context) else ""))
            prev = at
        pieces.append(context[prev:])
        return header + "".join(pieces) + question, offsets

    prompt, offsets = _fill(tokenizer, haystack, render, length, tag)
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if len(ids) != length:  # the search guarantees this; keep the invariant loud
        raise SlconvertError(f"internal: built a prompt of {len(ids)} tokens for length {length}")
    return NiahSample(task=task, length=length, depth=float(depth), sample=sample, seed=tag, prompt=prompt,
                      input_ids=list(ids), expected=expected, answer=" " + ", ".join(expected),
                      needle_chars=offsets)


def _fill(tokenizer, haystack: Haystack, render, length: int, tag: str):
    """Binary search on the haystack cut (in characters) for a prompt of exactly `length` tokens."""
    cache: dict[int, int] = {}
    hay = haystack.text(max(4 * length, 256))

    def tokens(cut: int) -> int:
        if cut not in cache:
            cache[cut] = prompt_length(tokenizer, render(cut, hay)[0])
        return cache[cut]

    floor = tokens(0)
    if floor > length:
        raise SlconvertError(f"length {length} is shorter than the prompt without haystack ({floor} tokens); "
                             f"use lengths of at least {floor}")
    while tokens(len(hay)) < length:
        if haystack.finite:
            raise SlconvertError(f"the haystack text gives only {tokens(len(hay))} of the {length} tokens asked; "
                                 "add more text to --haystack or use shorter --lengths")
        hay = haystack.text(2 * len(hay))
        cache.clear()
    lo, hi = 0, len(hay)  # tokens(lo) <= length <= tokens(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tokens(mid) <= length:
            lo = mid
        else:
            hi = mid
    # Token counts are only nearly monotone in the cut (merges across the cut); look nearby for an exact hit.
    for delta in range(0, 65):
        for cut in (lo + delta, lo - delta):
            if 0 <= cut <= len(hay) and tokens(cut) == length:
                return render(cut, hay)
    raise SlconvertError(f"could not fill prompt {tag} to exactly {length} tokens with this tokenizer; "
                         "try a neighbouring length")


def score_generation(text: str, expected: list[str]) -> float:
    """Share of the expected values found verbatim in the greedy answer (RULER's string match)."""
    if not expected:
        return 0.0
    return sum(value in text for value in expected) / len(expected)


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
