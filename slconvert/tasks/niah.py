"""Needle-in-a-haystack tasks shared by training and evaluation: templates, prompt styles, exact-length prompts.

Needles "One of the special magic numbers for KEY is: VALUE." hidden at sentence (or line) boundaries of a
haystack, a question at the end, and an answer prefix so that a greedy completion starts with the value.
The haystack is cut by binary search over its characters until the whole prompt, encoded by the model's
own tokenizer (special tokens included), has exactly the number of tokens asked for: a length on the
heatmap is a length the model really saw, and nothing is truncated afterwards.

Two prompt styles (`STYLES`):

* "ruler" follows RULER's conventions: its header and question (singular when exactly one value is asked,
  "What are all the special magic numbers for ..." otherwise), its answer prefix, its noise haystack by
  default, a depth drawn at random (seeded) for every prompt, a 128-token generation budget that counts in
  the length (a prompt of length L has L - 128 tokens, as RULER sizes its inputs), and RULER's
  string_match_all scoring (the share of gold values found in the lower-cased output).
* "slconvert" is this tool's own wording: the built-in haystack, exact depths, a budget of the answer's
  length + 4 tokens and case-sensitive matching. Training samples, the shipped recipes and the demo use it.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import asdict, dataclass, field

from ..errors import SlconvertError
from .haystack import Haystack
from .wordlists import ADJECTIVES, NOUNS

__all__ = [
    "Template", "TEMPLATES", "RULER_TEMPLATES", "PromptStyle", "STYLES", "TaskSpec", "TASKS", "VALUE_KINDS",
    "NiahSample", "build_sample", "score_generation", "score_sample", "generation_budget", "prompt_length",
    "chat_wrapper", "depth_ranges", "answer_kinds", "edit_distance",
]


@dataclass(frozen=True)
class Template:
    """The words around the haystack: header, needle sentence, and the prompt's tail.

    question_one / question_all are the whole tail after the haystack: the question, then the answer prefix
    answer_one / answer_all that ends it (a chat template puts the question in the user's turn and the
    answer prefix at the start of the assistant's). header_one, when set, is the header for a single value.
    """

    header: str
    needle: str
    question_one: str
    question_all: str
    answer_one: str = ""
    answer_all: str = ""
    header_one: str | None = None


TEMPLATES: dict[str, Template] = {
    "magic": Template(
        header=("Some special magic {plural} are hidden within the following text. Make sure to memorize them. "
                "I will quiz you about the {plural} afterwards.\n\n"),
        needle="One of the special magic {plural} for {key} is: {value}.",
        question_one=("\n\nWhat is the special magic {singular} for {keys} mentioned in the provided text?\n"
                      "Answer: The special magic {singular} for {keys} mentioned in the provided text is"),
        question_all=("\n\nWhat are all the special magic {plural} for {keys} mentioned in the provided text?\n"
                      "Answer: The special magic {plural} for {keys} mentioned in the provided text are"),
        answer_one="Answer: The special magic {singular} for {keys} mentioned in the provided text is",
        answer_all="Answer: The special magic {plural} for {keys} mentioned in the provided text are",
    ),
    "passkey": Template(
        header=("A pass key is hidden somewhere in the long text below. Find it and remember it; "
                "you will be asked for it at the end.\n\n"),
        needle="The pass key is {value}. Remember it. {value} is the pass key.",
        question_one="\n\nWhat is the pass key? The pass key is",
        question_all="\n\nWhat are the pass keys? The pass keys are",
        answer_one="The pass key is",
        answer_all="The pass keys are",
    ),
}

# RULER's NIAH wording: plural throughout, turned singular (header, question, answer prefix) when exactly one
# value is asked, as RULER does; the needles themselves always say "numbers" (or "words", "uuids").
_RULER_ONE = " The special magic {singular} for {keys} mentioned in the provided text is"
_RULER_ALL = " The special magic {plural} for {keys} mentioned in the provided text are"
RULER_TEMPLATES: dict[str, Template] = {
    "magic": Template(
        header=("Some special magic {plural} are hidden within the following text. Make sure to memorize it. "
                "I will quiz you about the {plural} afterwards.\n"),
        header_one=("A special magic {singular} is hidden within the following text. Make sure to memorize it. "
                    "I will quiz you about the {singular} afterwards.\n"),
        needle="One of the special magic {plural} for {key} is: {value}.",
        question_one="\nWhat is the special magic {singular} for {keys} mentioned in the provided text?" + _RULER_ONE,
        question_all="\nWhat are all the special magic {plural} for {keys} mentioned in the provided text?" + _RULER_ALL,
        answer_one=_RULER_ONE,
        answer_all=_RULER_ALL,
    ),
    "passkey": TEMPLATES["passkey"],  # RULER has no pass-key task; the wording stays this tool's
}


@dataclass(frozen=True)
class PromptStyle:
    """How prompts are worded, filled, placed and scored."""

    name: str
    templates: dict[str, Template]
    haystack: str  # the default haystack (see haystack.load_haystack)
    budget: int | None  # tokens to generate, counted in the length; None: the answer's length + 4, not counted
    ignore_case: bool  # scoring lower-cases output and gold values
    random_depths: bool  # each prompt's depth drawn at random within its row's range


STYLES: dict[str, PromptStyle] = {
    "ruler": PromptStyle("ruler", RULER_TEMPLATES, haystack="noise", budget=128, ignore_case=True,
                         random_depths=True),
    "slconvert": PromptStyle("slconvert", TEMPLATES, haystack="builtin", budget=None, ignore_case=False,
                             random_depths=False),
}


def _style(name: str) -> PromptStyle:
    if name not in STYLES:
        raise SlconvertError(f"unknown NIAH prompt style {name!r}; choose one of {', '.join(STYLES)}")
    return STYLES[name]


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
    """One prompt of the grid, with everything needed to score it and to reproduce it.

    `depth` is the grid row; `needle_depth` where the first asked needle was aimed (the same, or drawn at
    random within the row in the "ruler" style). `special_tokens`: whether the tokenizer adds its special
    tokens when the prompt is encoded (not when a chat template already wrote them into the text).
    """

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
    style: str = "slconvert"
    needle_depth: float | None = None
    special_tokens: bool = True

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


def prompt_length(tokenizer, text: str, special_tokens: bool = True) -> int:
    """Tokens the model sees for `text`, special tokens (BOS...) included, as the model is fed."""
    return len(tokenizer(text, add_special_tokens=special_tokens)["input_ids"])


_SLOT = "\x00niah-user-turn\x00"


def chat_wrapper(tokenizer) -> tuple[str, str]:
    """(text before, text after) the user's message in the tokenizer's chat template, generation prompt included."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise SlconvertError(f"the tokenizer of {name} has no chat template; leave out --chat-template "
                             "(base models read the plain prompt)")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SLOT}], tokenize=False,
                                         add_generation_prompt=True)
    if text.count(_SLOT) != 1:
        raise SlconvertError("the tokenizer's chat template does not hold the user's message verbatim; "
                             "leave out --chat-template")
    before, after = text.split(_SLOT)
    return before, after


def depth_ranges(depths: list[float]) -> list[tuple[float, float]]:
    """For each grid depth, the depths nearer to it than to its neighbours (within 0..100): its row's range."""
    order = sorted(set(depths))
    bounds = {}
    for i, d in enumerate(order):
        lo = 0.0 if i == 0 else (order[i - 1] + d) / 2
        hi = 100.0 if i == len(order) - 1 else (d + order[i + 1]) / 2
        bounds[d] = (lo, hi)
    return [bounds[d] for d in depths]


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
    style: str = "slconvert",
    depth_range: tuple[float, float] | None = None,
    chat: bool = False,
    distractor_kind: str | None = None,
) -> NiahSample:
    """A prompt of exactly `length` tokens (less the style's generation budget) with the first asked needle at
    `depth` percent, or at a depth drawn from `depth_range` (seeded) when given.

    Other needles (more values, more keys, distractors) go to random depths drawn from the same seed, so a
    grid cell is reproducible from (seed, task, length, depth, sample) alone. chat=True wraps the question in
    the tokenizer's chat template and starts the assistant's turn with the answer prefix. distractor_kind is the
    value kind of the distractor needles (default: value_kind, so only the key tells them from the asked one).
    """
    if task not in TASKS:
        raise SlconvertError(f"unknown needle task {task!r}; choose one of {', '.join(TASKS)}")
    distractor_kind = distractor_kind or value_kind
    for kind in (key_kind, value_kind, distractor_kind):
        if kind not in VALUE_KINDS:
            raise SlconvertError(f"unknown needle kind {kind!r}; choose one of {', '.join(VALUE_KINDS)}")
    if not 0.0 <= depth <= 100.0:
        raise SlconvertError(f"depth {depth} is outside 0..100; depths are percentages of the context")
    prompt_style = _style(style)
    spec = TASKS[task]
    template = prompt_style.templates[spec.template]
    tag = f"{seed}/{task}/{length}/{depth:g}/{sample}"
    rng = random.Random(tag)
    needle_depth = float(depth)
    if depth_range is not None:
        needle_depth = random.Random(f"{tag}/depth").uniform(*depth_range)
    taken: set[str] = set()
    keys = _distinct(VALUE_KINDS[key_kind][0], rng, spec.queries + spec.distractors, taken)
    asked, distract = keys[: spec.queries], keys[spec.queries:]
    _, singular, plural = VALUE_KINDS[value_kind]

    needles: list[tuple[float, str]] = []  # (depth fraction, sentence)
    expected: list[str] = []
    for key in asked:
        for value in _distinct(VALUE_KINDS[value_kind][0], rng, spec.values_per_key, taken):
            expected.append(value)
            where = needle_depth / 100.0 if not needles else rng.random()
            needles.append((where, template.needle.format(plural=plural, key=key, value=value)))
    make_distractor, _, distractor_plural = VALUE_KINDS[distractor_kind]
    for key in distract:
        value = _distinct(make_distractor, rng, 1, taken)[0]
        needles.append((rng.random(), template.needle.format(plural=distractor_plural, key=key, value=value)))

    many = len(expected) > 1
    words = {"singular": singular, "plural": plural, "keys": _join(asked)}
    header = (template.header if many or template.header_one is None else template.header_one).format(**words)
    question = (template.question_all if many else template.question_one).format(**words)
    before, after = "", ""
    if chat:
        answer_prefix = (template.answer_all if many else template.answer_one).format(**words)
        if not answer_prefix or not question.endswith(answer_prefix):
            raise SlconvertError(f"the {style} {spec.template} template has no answer prefix to start the "
                                 "assistant's turn; leave out --chat-template")
        before, after = chat_wrapper(tokenizer)
        question = question[: -len(answer_prefix)].rstrip() + after + answer_prefix.lstrip()
        header = before + header
    joiner = haystack.joiner

    def render(cut: int, hay: str) -> tuple[str, list[int]]:
        context = hay[:cut]
        # Needles go before a sentence (or line) start; the cut end is mid-sentence, so it is no boundary.
        starts = [s for s in haystack.boundaries(context) if s < len(context)] or [len(context)]
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
                pieces.append(joiner)
                so_far += len(joiner)
            offsets.append(so_far)
            pieces.append(sentence + (joiner if at < len(context) else ""))
            prev = at
        pieces.append(context[prev:])
        return header + "".join(pieces) + question, offsets

    special = not chat
    budget = prompt_style.budget or 0
    prompt, offsets = _fill(tokenizer, haystack, render, length - budget, tag, special=special, budget=budget)
    ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    if len(ids) != length - budget:  # the search guarantees this; keep the invariant loud
        raise SlconvertError(f"internal: built a prompt of {len(ids)} tokens for length {length}")
    return NiahSample(task=task, length=length, depth=float(depth), sample=sample, seed=tag, prompt=prompt,
                      input_ids=list(ids), expected=expected, answer=" " + ", ".join(expected),
                      needle_chars=offsets, style=style, needle_depth=needle_depth, special_tokens=special)


def _fill(tokenizer, haystack: Haystack, render, length: int, tag: str, *, special: bool = True, budget: int = 0):
    """Binary search on the haystack cut (in characters) for a prompt of exactly `length` tokens."""
    cache: dict[int, int] = {}
    hay = haystack.text(max(4 * length, 256))

    def tokens(cut: int) -> int:
        if cut not in cache:
            cache[cut] = prompt_length(tokenizer, render(cut, hay)[0], special)
        return cache[cut]

    floor = tokens(0)
    if floor > length:
        if budget:
            raise SlconvertError(f"length {length + budget} leaves {length} tokens for the prompt after the {budget}-token "
                                 f"generation budget, and the prompt without haystack is {floor} tokens; use lengths "
                                 f"of at least {floor + budget}")
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


def score_generation(text: str, expected: list[str], *, ignore_case: bool = False) -> float:
    """Share of the expected values found verbatim in the greedy answer (RULER's string_match_all).

    1.0 when every value appears; ignore_case lower-cases both sides, as RULER does.
    """
    if not expected:
        return 0.0
    if ignore_case:
        text, expected = text.lower(), [value.lower() for value in expected]
    return sum(value in text for value in expected) / len(expected)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest characters inserted, deleted or replaced to turn `a` into `b`."""
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        previous, row[0] = row[:], i
        for j, other in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (char != other))
    return row[-1]


def answer_kinds(records: list[dict]) -> dict:
    """What generated answers hold beyond their score, over records with "expected" and "output": how many prompts
    found 0, 1, ... of their expected values; the share whose answer repeats an expected value; and, over prompts
    whose values are numbers, the share whose answer holds a number (4+ digits) that is none of them (a wrong or
    invented value), and the share where such a number is a near copy of a value (one or two digits replaced,
    missing or added: a value read but copied wrong). Both are None when no prompt has numeric values. A multivalue
    answer that names one value four times and one that names a single value score alike; these counts tell them
    apart."""
    found: dict[int, int] = {}
    repeated = foreign = near = numeric = 0
    for record in records:
        output, expected = record["output"], record["expected"]
        hits = sum(value in output for value in expected)
        found[hits] = found.get(hits, 0) + 1
        repeated += any(output.count(value) > 1 for value in expected)
        if expected and all(value.isdigit() for value in expected):
            numeric += 1
            others = [number for number in re.findall(r"\d{4,}", output) if number not in expected]
            foreign += bool(others)
            near += any(edit_distance(number, value) <= 2 for number in others for value in expected)
    count = max(1, len(records))
    return {"prompts": len(records), "values_found": dict(sorted(found.items())), "repeats_a_value": repeated / count,
            "holds_another_number": foreign / numeric if numeric else None,
            "near_copy_of_a_value": near / numeric if numeric else None}


def score_sample(sample: NiahSample, text: str) -> float:
    """`score_generation` with the sample's prompt style (RULER's case-insensitive match or an exact one)."""
    return score_generation(text.strip(), sample.expected, ignore_case=_style(sample.style).ignore_case)


def generation_budget(sample: NiahSample, answer_tokens: int) -> int:
    """Tokens a greedy answer may take: the style's budget, else the gold answer's length + 4."""
    return _style(sample.style).budget or answer_tokens + 4
