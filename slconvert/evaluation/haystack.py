"""The haystacks live in `slconvert.tasks.haystack` (training builds needle samples from them too)."""

from __future__ import annotations

from ..tasks.haystack import (
    HAYSTACK_KINDS,
    FileHaystack,
    Haystack,
    NoiseHaystack,
    RepeatHaystack,
    SyntheticHaystack,
    load_haystack,
    sentence_starts,
)
from ..tasks.text import TEXT_SUFFIXES

__all__ = ["TEXT_SUFFIXES", "Haystack", "SyntheticHaystack", "RepeatHaystack", "NoiseHaystack", "FileHaystack", "load_haystack",
           "sentence_starts", "HAYSTACK_KINDS"]
