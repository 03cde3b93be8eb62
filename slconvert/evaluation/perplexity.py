"""Perplexity over whole long documents: chunked prefill with the cache, never truncated.

A document is fed in chunks that continue one cache (attention keys/values and recurrent states),
so every token is predicted from the entire document before it, exactly as in one unchunked
forward, while activations stay bounded by the chunk. A document longer than the model's context
is refused or, on request, skipped and counted; it is never cut.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import SlconvertError
from ..inputs import read_user_text
from ..tasks.text import DOCUMENT_SUFFIXES, JSONL_SUFFIX, TEXT_SUFFIXES
from .models import EvalModel, forward

__all__ = ["load_documents", "document_nll", "perplexity"]


def load_documents(path) -> list[tuple[str, str]]:
    """(name, text) for a text file, a .jsonl file (one {"text": ...} per line) or a folder of them."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SlconvertError(f"perplexity path {path} does not exist; pass a text file, a .jsonl file or a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    docs: list[tuple[str, str]] = []
    for file in files:
        if file.suffix.lower() == JSONL_SUFFIX:
            for number, line in enumerate(_read_text(file).split("\n"), start=1):  # JSON may hold a raw U+2028
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    text = None
                if not isinstance(text, str):
                    raise SlconvertError(f"{file}:{number} is not a JSON object with a \"text\" string; "
                                         "write one {\"text\": ...} per line")
                docs.append((f"{file.name}:{number}", text))
        elif file.suffix.lower() in TEXT_SUFFIXES or not path.is_dir():
            docs.append((file.name, _read_text(file)))
    docs = [(name, text) for name, text in docs if text.strip()]
    if not docs:
        raise SlconvertError(f"no documents found in {path}; use .txt/.md files or .jsonl with a \"text\" field")
    return docs


def _read_text(file: Path) -> str:
    """A document's text (`inputs.read_user_text`: UTF-8, no NUL bytes)."""
    return read_user_text(file, "", f"pass text files ({', '.join(DOCUMENT_SUFFIXES)}), saved as UTF-8")


@torch.no_grad()
def document_nll(model, ids: list[int], chunk: int) -> tuple[float, int]:
    """Sum of -log p(token | everything before it) over ids[1:], computed chunk by chunk with the cache."""
    if chunk < 1:
        raise SlconvertError(f"--chunk-size {chunk} must be at least 1")
    device = next(model.parameters()).device
    total, count, cache, carry = 0.0, 0, None, None
    for start in range(0, len(ids), chunk):
        piece = torch.tensor([ids[start:start + chunk]], device=device)
        logits, cache = forward(model, piece, cache=cache, use_cache=True)
        logits = logits[0].float()
        targets = piece[0]
        if carry is not None:  # the previous chunk's last position predicts this chunk's first token
            total += float(torch.nn.functional.cross_entropy(carry[None], targets[:1], reduction="sum"))
            count += 1
        if targets.numel() > 1:
            total += float(torch.nn.functional.cross_entropy(logits[:-1], targets[1:], reduction="sum"))
            count += targets.numel() - 1
        carry = logits[-1]
    return total, count


def perplexity(em: EvalModel, docs: list[tuple[str, str]], *, chunk: int, skip_too_long: bool,
               label: str | None = None) -> dict:
    """Per-document and pooled (token-weighted) perplexity, plus bits per byte for cross-tokenizer comparison."""
    rows, skipped = [], []
    with tqdm(docs, desc=f"perplexity on {label or em.name}", leave=False) as progress:  # closed on an error too
        for name, text in progress:
            ids = list(em.tokenizer(text, add_special_tokens=True)["input_ids"])
            if em.max_length is not None and len(ids) > em.max_length:
                if not skip_too_long:
                    raise SlconvertError(f"document {name} has {len(ids)} tokens, over the model's "
                                         f"{em.max_length}; raise --max-length, split the document, or pass "
                                         "--skip-too-long")
                skipped.append({"document": name, "tokens": len(ids), "max_length": em.max_length})
                continue
            if len(ids) < 2:
                skipped.append({"document": name, "tokens": len(ids), "reason": "fewer than 2 tokens"})
                continue
            nll, count = document_nll(em.model, ids, chunk)
            n_bytes = len(text.encode("utf-8"))
            rows.append({"model": label or em.name, "document": name, "tokens": len(ids), "scored": count, "nll": nll,
                         "perplexity": math.exp(nll / count), "bits_per_byte": nll / math.log(2) / n_bytes})
    scored = sum(r["scored"] for r in rows)
    total = sum(r["nll"] for r in rows)
    return {"model": label or em.name, "chunk_size": chunk, "documents": rows, "skipped": skipped,
            "tokens": scored, "perplexity": math.exp(total / scored) if scored else None}
