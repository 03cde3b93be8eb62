"""Span recall: how much of the dense attention mass falls inside the spans the router selects.

For every converted layer, query head and query position, the dense causal softmax of that layer's
own q and k (same scale, GQA) is summed over the keys Superlinear attention would read: the union
of the selected spans and the local window. A value near 1 means the router finds what dense
attention would have looked at; a low value points at a layer whose router needs training.

Queries still inside the window (t <= W + 1) see everything by construction, so the headline
number averages only queries beyond the window; the average over all queries is reported too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import SlconvertError
from .models import EvalModel, forward

__all__ = ["layer_recall", "span_recall", "check_converted", "check_length", "check_texts"]


@torch.no_grad()
def layer_recall(record: dict, block_rows: int = 128) -> dict:
    """Per-head recall of one captured attention call (batch row 0..B-1 pooled)."""
    from slkernels import select_spans
    from slkernels.inputs import first_real_token

    q, k, q_search = record["q"], record["k"], record["q_search"]
    config, mask, positions = record["config"], record.get("attention_mask"), record.get("cache_position")
    batch, heads_q, len_q, dim = q.shape
    len_kv = k.shape[2]
    group = heads_q // k.shape[1]
    if positions is None:
        positions = torch.arange(len_kv - len_q, len_kv, device=q.device)
    scale = record.get("scale") or dim ** -0.5
    selection = select_spans(q_search, k, config, cache_position=positions, attention_mask=mask)
    keys = k.float().repeat_interleave(group, dim=1)  # query head h reads kv head h // group
    first = torch.zeros(batch, dtype=torch.long, device=q.device) if mask is None else first_real_token(mask)
    tokens_seen = positions[None, :] + 1 - first[:, None]  # [B, L_q]
    beyond = tokens_seen > config.window + 1
    x = torch.arange(len_kv, device=q.device)
    recall_sum = torch.zeros(heads_q, dtype=torch.float64, device=q.device)
    recall_all = torch.zeros(heads_q, dtype=torch.float64, device=q.device)
    for start in range(0, len_q, block_rows):
        stop = min(start + block_rows, len_q)
        pos = positions[start:stop]
        logits = torch.einsum("bhqd,bhkd->bhqk", q[:, :, start:stop].float(), keys) * scale
        visible = (x[None, None, :] <= pos[None, :, None]) & (x[None, None, :] >= first[:, None, None])
        logits = logits.masked_fill(~visible[:, None], torch.finfo(logits.dtype).min)
        probs = torch.softmax(logits, dim=-1) * visible[:, None]
        lo, hi = selection.span_lo[:, :, start:stop, :, None], selection.span_hi[:, :, start:stop, :, None]
        live = (selection.anchor[:, :, start:stop] >= 0)[..., None]
        inside = ((x >= lo) & (x <= hi) & live).any(dim=-2)
        win_lo, win_hi = selection.window_lo[:, None, start:stop, None], selection.window_hi[:, None, start:stop, None]
        inside |= (x >= win_lo) & (x <= win_hi)
        recall = (probs * inside).sum(-1).double()  # [B, H, rows]
        real = (tokens_seen[:, start:stop] >= 1)[:, None]
        recall_all += (recall * real).sum(dim=(0, 2))
        recall_sum += (recall * beyond[:, None, start:stop]).sum(dim=(0, 2))
    n_beyond = int(beyond.sum())
    n_real = int((tokens_seen >= 1).sum())
    return {
        "layer": int(record["layer_idx"]),
        "window": config.window,
        "queries_beyond_window": n_beyond,
        "queries": n_real,
        "recall": (recall_sum / n_beyond).tolist() if n_beyond else None,
        "recall_all": (recall_all / max(n_real, 1)).tolist(),
    }


def check_converted(path, converted: bool | None = None) -> None:
    """Span recall needs Superlinear layers: a checkpoint without them is refused in one line, known from its
    config.json before it loads (`converted` None) or from the loaded model."""
    if converted is None:
        from .models import _is_converted

        converted = _is_converted(Path(path))
    if not converted:
        raise SlconvertError(f"{path} is not a converted checkpoint: span recall needs Superlinear layers; "
                             "run it on the output of `slconvert convert`")


def check_length(tokens: int, window: int, what: str) -> None:
    """Span recall scores only queries past the window (t > W + 1): WHAT, of TOKENS tokens, must have one."""
    if tokens < window + 2:
        raise SlconvertError(f"{what} ({tokens} tokens) never leaves the attention window (W = {window}); use at "
                             f"least {window + 2} tokens")


def check_texts(em: EvalModel, texts: list[str], what: str = "the longest span-recall text") -> list[list[int]]:
    """The token ids of span-recall texts, refused in one line when one is over the model's context or when none
    reaches past the window (WHAT names the longest); `slconvert eval` calls it before any task runs."""
    from ..loading import converted_params

    ids = [em.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
    for one in ids:
        if em.max_length is not None and len(one) > em.max_length:
            raise SlconvertError(f"a span-recall text has {len(one)} tokens, over the model's {em.max_length}; "
                                 "use a shorter text or raise --max-length")
    check_length(max(map(len, ids)), converted_params(em.path).window, what)
    return ids


def _pooled(results: list[dict], key: str, rows_key: str) -> list[float] | None:
    """Per-head `key` of one layer's `layer_recall` results pooled over their query rows (`rows_key` counts them,
    so a longer text weighs more); None where no result has such a row."""
    rows = sum(r[rows_key] for r in results)
    if not rows:
        return None
    heads = len(results[0]["recall_all"])
    return [sum(r[key][h] * r[rows_key] for r in results if r[rows_key]) / rows for h in range(heads)]


def span_recall(em: EvalModel, texts: list[str], ids: list[list[int]] | None = None) -> dict:
    """Span recall per converted layer and head over the given texts (one forward each), each figure pooled over
    the query rows of all texts, so a longer text weighs more: ``recall`` over the rows past the window, ``recall_all``
    over every real row. ids: the texts' token ids from `check_texts`, when the caller has checked them."""
    check_converted(em.path, em.converted)
    from ..attention import capture_attention

    per_layer: dict[int, list[dict]] = {}
    tokens = 0
    ids = check_texts(em, texts) if ids is None else ids
    with tqdm(ids, desc="span recall", leave=False) as progress:  # closed on an error too
        for ids in progress:
            tokens += len(ids)
            with capture_attention(em.model) as calls:
                forward(em.model, torch.tensor([ids], device=em.device), logits_to_keep=1)  # logits unread
            if not calls:
                raise SlconvertError(f"no converted attention layer ran in {em.path}; check that it was converted")
            for call in calls:
                result = layer_recall(call)
                per_layer.setdefault(result["layer"], []).append(result)

    layers = []
    for layer, results in sorted(per_layer.items()):
        layers.append({"layer": layer, "window": results[0]["window"],
                       "queries_beyond_window": sum(r["queries_beyond_window"] for r in results),
                       "recall": _pooled(results, "recall", "queries_beyond_window"),
                       "recall_all": _pooled(results, "recall_all", "queries")})
    heads = [h for entry in layers if entry["recall"] for h in entry["recall"]]
    return {"tokens": tokens, "texts": len(texts), "layers": layers, "average": sum(heads) / len(heads)}
