"""Which files are text: one list for the haystack, the perplexity documents and the training data."""

from __future__ import annotations

__all__ = ["TEXT_SUFFIXES", "JSONL_SUFFIX", "DOCUMENT_SUFFIXES"]

# Plain text, read whole.
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
# JSON lines: one document per line, its text in a field.
JSONL_SUFFIX = ".jsonl"
# Everything that holds documents: plain text and JSON lines (training data, perplexity documents).
DOCUMENT_SUFFIXES = (*TEXT_SUFFIXES, JSONL_SUFFIX)
