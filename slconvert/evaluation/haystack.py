"""Haystack text for needle-in-a-haystack prompts: a built-in generator or the user's own files.

A haystack only has to hand out a long, deterministic string and say where its sentences start, so
that needles land on sentence boundaries. The prompt builder cuts it to the exact token budget; a
haystack never repeats or pads itself, so a too-short user corpus is reported, not stretched.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..errors import SlconvertError
from .wordlists import ADJECTIVES, CONNECTIVES, NOUNS, PLACES, VERBS

__all__ = ["Haystack", "SyntheticHaystack", "RepeatHaystack", "FileHaystack", "load_haystack", "sentence_starts"]

TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence starts (0 and len(text) included), sorted and unique."""
    starts = {0, len(text)}
    starts.update(m.end() for m in _SENTENCE_END.finditer(text))
    return sorted(starts)


class Haystack:
    """A deterministic stream of text; `text(n)` returns at least n characters when it has them."""

    name = "haystack"
    finite = False

    def text(self, min_chars: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

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


class FileHaystack(Haystack):
    """The user's text files (and the text files found under given folders), in sorted order, joined."""

    name = "files"
    finite = True

    def __init__(self, paths: list[Path]):
        files: list[Path] = []
        for path in paths:
            if not path.exists():
                raise SlconvertError(f"haystack path {path} does not exist; pass a text file or a folder of .txt/.md files")
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES))
            else:
                files.append(path)
        if not files:
            raise SlconvertError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {', '.join(map(str, paths))}; "
                                 "add some or leave --haystack out to use the built-in generator")
        self.files = files
        texts = [f.read_text(encoding="utf-8", errors="replace").strip() for f in files]
        self._text = "\n\n".join(t for t in texts if t) + "\n\n"
        if not self._text.strip():
            raise SlconvertError(f"the haystack files {', '.join(map(str, paths))} are empty; add text to them")

    def text(self, min_chars: int) -> str:
        return self._text

    def describe(self) -> dict:
        return {"kind": self.name, "files": [str(f) for f in self.files], "chars": len(self._text)}


def load_haystack(spec: str | None, seed: int = 0) -> Haystack:
    """`None`/"builtin": the generator; "repeat": the filler; else a comma-separated list of files/folders."""
    if spec is None or spec.strip().lower() in ("", "builtin"):
        return SyntheticHaystack(seed)
    if spec.strip().lower() == "repeat":
        return RepeatHaystack()
    return FileHaystack([Path(p.strip()).expanduser() for p in spec.split(",") if p.strip()])
