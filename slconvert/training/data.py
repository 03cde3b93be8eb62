"""Training sequences, generated deterministically from (seed, step, index).

Every sequence of a run is a pure function of the recipe's seed, the optimizer step and its index in the
global batch. That is what makes ``--resume`` exact without saving any data-loader state, and what makes a
run on several GPUs see the very same global batch as a run on one (each process takes its share of the
indices).

Two kinds of sequence:

* text: the user's .txt/.jsonl files (or, without files, the built-in pseudo-English generator) tokenized
  once, documents joined by EOS, cut into windows of ``seq_len`` tokens; each epoch visits the windows in
  a fresh seeded order. Every token is a target.
* needle retrieval (NIAH): needles "One of the special magic numbers for KEY is: VALUE." placed at
  sentence boundaries of a haystack (built-in sentences, the user's text, or random tokens = noise), the
  question, and the answer; only the answer tokens (and EOS) are targets. Tasks, needle templates and the
  word lists are shared with the evaluation (`slconvert.tasks.niah`), so training and evaluation ask the
  same questions. Samples are assembled from pre-tokenized pieces, so a 64K-token sample costs no
  re-tokenization and has exactly ``seq_len`` tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SlconvertError
from ..inputs import read_user_text
from ..tasks.haystack import SyntheticHaystack, sentence_starts
from ..tasks.niah import TASKS, TEMPLATES, VALUE_KINDS
from ..tasks.text import DOCUMENT_SUFFIXES as TEXT_SUFFIXES

__all__ = ["NIAH_TASKS", "VALUE_KINDS", "Sample", "TextCorpus", "NiahGenerator", "SequenceSource", "find_text_files",
           "IGNORE"]

NIAH_TASKS = TASKS
IGNORE = -100


@dataclass
class Sample:
    """One training sequence: token ids and per-token targets (IGNORE where no loss is taken)."""

    input_ids: np.ndarray  # int64 [L]
    labels: np.ndarray  # int64 [L]; labels[i] is the target of position i (the token itself; the loss shifts)
    kind: str  # "text" or "niah"


def find_text_files(paths) -> list[Path]:
    """Expand files and folders into the sorted list of .txt/.jsonl/.md files, refusing what is missing."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SlconvertError(f"data path {path} does not exist; pass files or folders of .txt/.jsonl text")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise SlconvertError(f"folder {path} holds no {'/'.join(TEXT_SUFFIXES)} files; add text or fix data.text")
            files.extend(found)
        elif path.suffix.lower() in TEXT_SUFFIXES:
            files.append(path)
        else:
            raise SlconvertError(f"data file {path} is not {'/'.join(TEXT_SUFFIXES)}; convert it to text or JSON lines")
    return files


_TEXT_FIX = f"pass {'/'.join(TEXT_SUFFIXES)} files saved as UTF-8"


def read_documents(files: list[Path], jsonl_field: str) -> list[str]:
    """The documents of the given files: a .txt/.md file is one document, a .jsonl file one per line."""
    docs: list[str] = []
    for path in files:
        if path.suffix.lower() != ".jsonl":
            text = read_user_text(path, "data file", _TEXT_FIX).strip()
            if text:
                docs.append(text)
            continue
        for number, line in enumerate(read_user_text(path, "data file", _TEXT_FIX).split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise SlconvertError(f"{path}:{number} is not valid JSON; fix the line or remove it") from None
            text = record.get(jsonl_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise SlconvertError(f"{path}:{number} has no string field {jsonl_field!r}; "
                                     "set data.jsonl_field to the field that holds the text")
            if text.strip():
                docs.append(text)
    if not docs:
        raise SlconvertError(f"the data files ({', '.join(map(str, files[:3]))}) hold no text; add some")
    return docs


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


class TextCorpus:
    """A token stream cut into fixed-length windows, visited in a seeded order per epoch."""

    def __init__(self, tokens: np.ndarray, seed: int, description: str):
        self.tokens = tokens
        self.seed = seed
        self.description = description

    @classmethod
    def from_documents(cls, tokenizer, docs: list[str], seed: int, description: str) -> TextCorpus:
        eos = tokenizer.eos_token_id
        parts = []
        for ids in _encode_many(tokenizer, docs):
            parts.append(np.asarray(ids, dtype=np.int64))
            if eos is not None:
                parts.append(np.asarray([eos], dtype=np.int64))
        return cls(np.concatenate(parts), seed, description)

    @classmethod
    def builtin(cls, tokenizer, n_tokens: int, seed: int) -> TextCorpus:
        """Pseudo-English from the evaluation's sentence generator, about `n_tokens` long."""
        haystack = SyntheticHaystack(seed)
        chars = max(4 * n_tokens, 1024)
        while True:
            text = haystack.text(chars)
            docs = [p for p in text.split("\n\n") if p.strip()]
            corpus = cls.from_documents(tokenizer, docs, seed, "built-in pseudo-English")
            if len(corpus.tokens) >= n_tokens:
                return corpus
            chars *= 2

    def check_length(self, seq_len: int) -> None:
        if len(self.tokens) < seq_len:
            raise SlconvertError(f"the {self.description} text has {len(self.tokens)} tokens, fewer than one "
                                 f"sequence of {seq_len}; add text or lower seq_len")

    def window(self, ordinal: int, seq_len: int, salt: int = 7) -> np.ndarray:
        """The `ordinal`-th window of `seq_len` tokens of the run (a new seeded order every epoch)."""
        count = len(self.tokens) // seq_len
        epoch, index = divmod(ordinal, count)
        order = np.random.default_rng([self.seed, epoch, seq_len, salt]).permutation(count)
        start = int(order[index]) * seq_len
        return self.tokens[start:start + seq_len].copy()


class SentencePool:
    """Haystack sentences, each tokenized once; a haystack is a run of consecutive sentences."""

    def __init__(self, tokenizer, text: str):
        starts = sentence_starts(text)
        sentences = [text[a:b] for a, b in zip(starts[:-1], starts[1:]) if text[a:b].strip()]
        self.pieces = [np.asarray(ids, dtype=np.int64) for ids in _encode_many(tokenizer, sentences) if ids]
        if not self.pieces:
            raise SlconvertError("the haystack text has no sentences; add text to data.text")
        self.total = sum(len(p) for p in self.pieces)

    def run(self, rng: random.Random, n_tokens: int) -> list[np.ndarray]:
        """Consecutive sentences (wrapping around) from a random start, cut to exactly n_tokens."""
        out, have = [], 0
        i = rng.randrange(len(self.pieces))
        while have < n_tokens:
            piece = self.pieces[i % len(self.pieces)][: n_tokens - have]
            out.append(piece)
            have += len(piece)
            i += 1
        return out


def in_answer_order(order: list[int], owners: list[int]) -> list[int]:
    """`order` (the needle at each place in the context, first to last; needle i < len(owners) is the i-th value of
    the answer, of key owners[i]; the others are distractors) with each key's needles moved among the places they
    hold so that they stand in the answer's order. The places of each key and of the distractors stay where the
    shuffle put them."""
    out = list(order)
    for key in set(owners):
        places = [place for place, needle in enumerate(order) if needle < len(owners) and owners[needle] == key]
        for place, needle in zip(places, sorted(order[place] for place in places)):
            out[place] = needle
    return out


class NiahGenerator:
    """Needle-retrieval samples of exactly `seq_len` tokens; only the answer is a target."""

    def __init__(self, tokenizer, haystack: str, pool: SentencePool | None, key_kind: str, value_kind: str,
                 vocab_size: int, needle_order: str = "shuffled"):
        self.tokenizer = tokenizer
        self.haystack = haystack
        self.pool = pool
        self.key_kind = key_kind
        self.value_kind = value_kind
        self.needle_order = needle_order  # recipe.NEEDLE_ORDERS
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.noise_ids = np.asarray([i for i in range(min(vocab_size, len(tokenizer))) if i not in special],
                                    dtype=np.int64)

    def _ids(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def _filler(self, rng: random.Random, n_tokens: int) -> list[np.ndarray]:
        if self.haystack == "noise":
            nprng = np.random.default_rng(rng.getrandbits(63))
            # Noise comes in "sentences" of 16 tokens so needles still have boundaries to sit on.
            ids = self.noise_ids[nprng.integers(0, len(self.noise_ids), n_tokens)]
            return [ids[i:i + 16] for i in range(0, n_tokens, 16)]
        return self.pool.run(rng, n_tokens)

    def sample(self, rng: random.Random, seq_len: int, task: str) -> Sample:
        spec = TASKS[task]
        template = TEMPLATES[spec.template]
        make_key, _, _ = VALUE_KINDS[self.key_kind]
        make_value, singular, plural = VALUE_KINDS[self.value_kind]
        taken: set[str] = set()

        def fresh(make) -> str:
            while True:
                value = make(rng)
                if value not in taken:
                    taken.add(value)
                    return value

        keys = [fresh(make_key) for _ in range(spec.queries + spec.distractors)]
        asked = keys[: spec.queries]
        needles, expected, owners = [], [], []  # owners: the asked key of each asked needle
        for index, key in enumerate(asked):
            for _ in range(spec.values_per_key):
                value = fresh(make_value)
                expected.append(value)
                owners.append(index)
                needles.append(template.needle.format(plural=plural, key=key, value=value))
        for key in keys[spec.queries:]:
            needles.append(template.needle.format(plural=plural, key=key, value=fresh(make_value)))
        joined = " and ".join(asked) if len(asked) <= 2 else ", ".join(asked[:-1]) + ", and " + asked[-1]
        question = (template.question_all if len(expected) > 1 else template.question_one).format(
            singular=singular, plural=plural, keys=joined)

        bos = self.tokenizer.bos_token_id
        eos = self.tokenizer.eos_token_id
        head = self._ids(template.header.format(plural=plural))
        if bos is not None:
            head = np.concatenate([[bos], head])
        needle_ids = [self._ids(" " + n + " ") for n in needles]
        tail = self._ids(question)
        answer = self._ids(" " + ", ".join(expected))
        if eos is not None:
            answer = np.concatenate([answer, [eos]])
        fixed = len(head) + sum(len(n) for n in needle_ids) + len(tail) + len(answer)
        room = seq_len - fixed
        if room < 0:
            raise SlconvertError(f"seq_len {seq_len} is too short for a {task!r} needle sample ({fixed} tokens "
                                 "without haystack); raise seq_len or the curriculum's first length")
        filler = self._filler(rng, room)
        # Needles go between haystack sentences at random depths.
        cuts = sorted(rng.randint(0, len(filler)) for _ in needle_ids)
        order = list(range(len(needle_ids)))
        rng.shuffle(order)
        if self.needle_order == "answer":
            order = in_answer_order(order, owners)
        parts, prev = [head], 0
        for cut, which in zip(cuts, order):
            parts.extend(filler[prev:cut])
            parts.append(needle_ids[which])
            prev = cut
        parts.extend(filler[prev:])
        parts.append(tail)
        context = np.concatenate(parts)
        ids = np.concatenate([context, answer]).astype(np.int64)
        labels = np.full_like(ids, IGNORE)
        labels[len(context):] = answer
        assert len(ids) == seq_len, (len(ids), seq_len)
        return Sample(ids, labels, "niah")


class SequenceSource:
    """Global batch `step` of a run: its stage's `batch_size` samples, sample i a pure function of (seed, step, i)."""

    def __init__(self, recipe, tokenizer, vocab_size: int):
        self.recipe = recipe
        spec = recipe.data
        want_text = spec.niah_fraction < 1.0
        want_pool = spec.niah_fraction > 0.0 and spec.niah_haystack != "noise"
        docs = read_documents(find_text_files(spec.text), spec.jsonl_field) if spec.text else None
        self.corpus = None
        if want_text:
            if docs is not None:
                self.corpus = TextCorpus.from_documents(tokenizer, docs, recipe.seed, "data.text")
            else:
                need = spec.corpus_tokens or max(8 * recipe.longest, 1 << 16)
                self.corpus = TextCorpus.builtin(tokenizer, need, recipe.seed)
            self.corpus.check_length(recipe.longest)
        self.niah = None
        if spec.niah_fraction > 0.0:
            pool = None
            if want_pool:
                if spec.niah_haystack == "text":
                    text = "\n\n".join(docs)
                else:
                    text = SyntheticHaystack(recipe.seed + 1).text(max(4 * recipe.longest, 4096))
                pool = SentencePool(tokenizer, text)
            self.niah = NiahGenerator(tokenizer, spec.niah_haystack, pool, spec.key_kind, spec.value_kind, vocab_size,
                                       spec.needle_order)
            # Fail now, not at step 1000, if a stage's length cannot hold a sample of one of its tasks.
            for stage in recipe.stages():
                for task in recipe.tasks_of(stage):
                    self.niah.sample(random.Random(0), stage.seq_len, task)

    def sample(self, step: int, index: int) -> Sample:
        recipe = self.recipe
        stage = recipe.stage_at(step)
        rng = random.Random(f"{recipe.seed}/{step}/{index}")
        if self.niah is not None and (self.corpus is None or rng.random() < recipe.data.niah_fraction):
            return self.niah.sample(rng, stage.seq_len, rng.choice(recipe.tasks_of(stage)))
        ids = self.corpus.window(recipe.sequences_before(step) + index, stage.seq_len)
        return Sample(ids, ids.copy(), "text")

    def eval_sample(self, index: int) -> Sample:
        """Held-out sample `index` at the run's last context length (for span-recall measurements)."""
        recipe = self.recipe
        last = recipe.stages()[-1]
        seq_len = last.seq_len
        rng = random.Random(f"{recipe.seed}/eval/{index}")
        if self.niah is not None and (self.corpus is None or rng.random() < recipe.data.niah_fraction):
            return self.niah.sample(rng, seq_len, rng.choice(recipe.tasks_of(last)))
        ids = self.corpus.window(index, seq_len, salt=11)
        return Sample(ids, ids.copy(), "text")

    def micro_batches(self, step: int, rank: int, world: int) -> list[tuple[int, list[Sample]]]:
        """This process's micro-batches of step `step`: indices rank, rank + world, ... of the global batch.

        Each comes with the global index of its first sample, which seeds anything random about it (the
        router rows), so that with one sequence per micro-batch the work does not depend on the split.
        """
        stage = self.recipe.stage_at(step)
        mine = list(range(rank, self.recipe.batch_of(stage), world))
        size = self.recipe.micro_batch_of(stage)
        return [(mine[j], [self.sample(step, i) for i in mine[j:j + size]]) for j in range(0, len(mine), size)]
