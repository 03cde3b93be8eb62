"""Haystack text for needle-in-a-haystack prompts: generated, repeated, RULER's noise, or the user's files.

A haystack only has to hand out a long, deterministic string, say where a needle may go (its sentence
or line starts) and what separates a needle from the text after it. The prompt builder cuts it to the
exact token budget; a haystack never repeats or pads itself, so a too-short user corpus is reported, not
stretched.

Kinds: `builtin` (pseudo-English from the word lists, seeded), `repeat` (a few plain sentences over and
over), `noise` (RULER's repeated noise sentences, one group per line; needles on lines of their own, as in
RULER's niah_single_1) and the user's text files; read as an `essay` haystack (RULER's essay haystack,
from a local folder: whitespace folded, needles between sentences) in the RULER prompt style.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..errors import SlconvertError
from ..inputs import read_user_text
from .text import TEXT_SUFFIXES
from .wordlists import ADJECTIVES, CONNECTIVES, NOUNS, PLACES, VERBS

__all__ = ["Haystack", "SyntheticHaystack", "RepeatHaystack", "NoiseHaystack", "FileHaystack", "load_haystack",
           "sentence_starts", "HAYSTACK_KINDS"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")

HAYSTACK_KINDS = ("builtin", "repeat", "noise", "essay")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence starts (0 and len(text) included), sorted and unique."""
    starts = {0, len(text)}
    starts.update(m.end() for m in _SENTENCE_END.finditer(text))
    return sorted(starts)


class Haystack:
    """A deterministic stream of text; `text(n)` returns at least n characters when it has them."""

    name = "haystack"
    finite = False
    joiner = " "  # what follows a needle placed before haystack text (and precedes one placed at the end)

    def text(self, min_chars: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def boundaries(self, text: str) -> list[int]:
        """Offsets in `text` before which a needle may go (sentence starts by default)."""
        return sentence_starts(text)

    def describe(self) -> dict:
        return {"kind": self.name}


class SyntheticHaystack(Haystack):
    """Pseudo-English sentences from the built-in word lists, seeded: the same seed gives the same text."""

    name = "builtin"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng = random.Random(f"haystack-{seed}")
        self._parts: list[str] = []
        self._length = 0

    def _sentence(self) -> str:
        r = self._rng
        subject = f"the {r.choice(ADJECTIVES)} {r.choice(NOUNS)}"
        obj = f"a {r.choice(ADJECTIVES)} {r.choice(NOUNS)}"
        sentence = f"{subject} {r.choice(VERBS)} {obj} {r.choice(PLACES)}."
        if r.random() < 0.3:
            sentence = f"{r.choice(CONNECTIVES)}, {sentence}"
        return sentence[0].upper() + sentence[1:]

    def text(self, min_chars: int) -> str:
        while self._length < min_chars:
            # Paragraphs of 4-8 sentences keep the text from being one endless line.
            paragraph = " ".join(self._sentence() for _ in range(self._rng.randint(4, 8)))
            chunk = paragraph + "\n\n"
            self._parts.append(chunk)
            self._length += len(chunk)
        return "".join(self._parts)

    def describe(self) -> dict:
        return {"kind": self.name, "seed": self.seed}


class RepeatHaystack(Haystack):
    """A few plain sentences over and over: the classic pass-key filler, nothing to confuse with a needle."""

    name = "repeat"
    FILLER = ("The river runs east. The hills are quiet. The road goes on and on. Morning turns to noon. "
              "Nothing new happens here.\n")

    def text(self, min_chars: int) -> str:
        return self.FILLER * (min_chars // len(self.FILLER) + 1)


class NoiseHaystack(Haystack):
    """RULER's noise haystack: its five noise sentences, one group per line; needles go on lines of their own."""

    name = "noise"
    joiner = "\n"
    NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

    def text(self, min_chars: int) -> str:
        line = self.NOISE + "\n"
        return line * (min_chars // len(line) + 1)

    def boundaries(self, text: str) -> list[int]:
        return sorted({0, len(text), *(i + 1 for i, char in enumerate(text) if char == "\n")})


class FileHaystack(Haystack):
    """The user's text files (and the text files found under given folders), in sorted order, joined.

    essay=True reads them as RULER's essay haystack does: all whitespace folded to single spaces, so the
    text is one run of sentences and needles go between sentences.
    """

    finite = True

    def __init__(self, paths: list[Path], *, essay: bool = False):
        files: list[Path] = []
        for path in paths:
            if not path.exists():
                raise SlconvertError(f"haystack path {path} does not exist; pass builtin, noise, repeat, a text file or "
                                     "a folder of .txt/.md files")
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES))
            elif path.suffix.lower() in TEXT_SUFFIXES:
                files.append(path)
            else:  # a .jsonl or .csv file would go into the prompts as it is, keys and quotes included
                raise SlconvertError(f"haystack file {path} is not a text file ({', '.join(TEXT_SUFFIXES)}); save the "
                                     "haystack as plain text, or pass a folder of such files")
        if not files:
            raise SlconvertError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {', '.join(map(str, paths))}; "
                                 "add some or leave --haystack out to use the default haystack")
        self.files = files
        self.essay = essay
        self.name = "essay" if essay else "files"
        texts = [read_user_text(f, "haystack file", "pass text files saved as UTF-8").strip() for f in files]
        if essay:
            self._text = re.sub(r"\s+", " ", " ".join(t for t in texts if t)).strip() + " "
        else:
            self._text = "\n\n".join(t for t in texts if t) + "\n\n"
        if not self._text.strip():
            raise SlconvertError(f"the haystack files {', '.join(map(str, paths))} are empty; add text to them")

    def text(self, min_chars: int) -> str:
        return self._text

    def describe(self) -> dict:
        return {"kind": self.name, "files": [str(f) for f in self.files], "chars": len(self._text)}


def load_haystack(spec: str | None, seed: int = 0, style: str = "slconvert") -> Haystack:
    """A haystack by name or from files; `None` gives the prompt style's default.

    "builtin": the generator; "repeat": the pass-key filler; "noise": RULER's noise sentences; else a
    comma-separated list of files/folders, read as RULER's essay haystack in the "ruler" style. "essay"
    alone is refused: the essays are read from a local folder, never downloaded.
    """
    name = (spec or "").strip().lower()
    if not name:
        name = "noise" if style == "ruler" else "builtin"
    if name == "builtin":
        return SyntheticHaystack(seed)
    if name == "repeat":
        return RepeatHaystack()
    if name == "noise":
        return NoiseHaystack()
    if name in ("essay", "essays"):
        raise SlconvertError("the essay haystack is read from a local folder, never downloaded: pass --haystack DIR, "
                             "a folder of .txt files (e.g. Paul Graham's essays, as RULER uses)")
    paths = [Path(p.strip()).expanduser() for p in spec.split(",") if p.strip()]
    if not paths:
        raise SlconvertError(f"--haystack {spec!r} names no file or folder; pass builtin, noise, repeat, text files or "
                             "folders, or leave it out for the default haystack")
    return FileHaystack(paths, essay=style == "ruler")
