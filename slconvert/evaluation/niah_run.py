"""Running a needle grid (lengths x depths x samples) on a model and aggregating it into a heatmap table.

Prompts are built once from the first model's tokenizer and reused verbatim (same text) for a
comparison model, so both heatmaps are measured on identical inputs. A prompt that would not fit
the model's context (prompt plus the tokens it must produce) is refused before any compute, or,
when the user asked for it, skipped and counted per cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..errors import SlconvertError
from .haystack import Haystack
from .models import EvalModel, greedy_generate, last_logits
from .niah import NiahSample, build_sample, score_generation, score_teacher_forced

__all__ = ["NiahGrid", "build_grid", "run_grid", "grid_table", "MODES"]

MODES = ("generate", "teacher")


@dataclass
class NiahGrid:
    """The prompts of one run, and the (length, depth) cells skipped because they do not fit."""

    task: str
    lengths: list[int]
    depths: list[float]
    samples: list[NiahSample]
    skipped: list[dict] = field(default_factory=list)


def answer_ids(tokenizer, sample: NiahSample) -> list[int]:
    return list(tokenizer(sample.answer, add_special_tokens=False)["input_ids"])


def needed_tokens(tokenizer, sample: NiahSample, mode: str) -> int:
    """Tokens the model must hold: the prompt plus the answer (teacher-forced) or generation budget."""
    return sample.length + len(answer_ids(tokenizer, sample)) + (4 if mode == "generate" else 0)


def build_grid(tokenizer, haystack: Haystack, *, task: str, lengths: list[int], depths: list[float],
               samples: int, seed: int, key_kind: str, value_kind: str, max_length: int | None, mode: str,
               skip_too_long: bool) -> NiahGrid:
    if samples < 1:
        raise SlconvertError(f"--samples {samples} must be at least 1")
    if mode not in MODES:
        raise SlconvertError(f"unknown NIAH mode {mode!r}; use one of {', '.join(MODES)}")
    grid = NiahGrid(task=task, lengths=list(lengths), depths=list(depths), samples=[])
    too_long: list[str] = []
    cells = [(length, depth) for length in lengths for depth in depths]
    for length, depth in tqdm(cells, desc=f"building {task} prompts", leave=False):
        for index in range(samples):
            sample = build_sample(tokenizer, haystack, task, length, depth, index, seed=seed,
                                  key_kind=key_kind, value_kind=value_kind)
            need = needed_tokens(tokenizer, sample, mode)
            if max_length is not None and need > max_length:
                grid.skipped.append({"length": length, "depth": depth, "sample": index, "needed_tokens": need,
                                     "max_length": max_length, "reason": "does not fit the model's context"})
                too_long.append(f"{length} (needs {need})")
                continue
            grid.samples.append(sample)
    if too_long and not skip_too_long:
        shown = ", ".join(sorted(set(too_long), key=lambda s: int(s.split()[0])))
        raise SlconvertError(f"prompts of length {shown} do not fit the model's {max_length} tokens; drop those "
                             "--lengths, raise --max-length, or pass --skip-too-long to skip and count them")
    return grid


def run_grid(em: EvalModel, grid: NiahGrid, *, mode: str, label: str | None = None,
             prefill_chunk: int | None = None) -> list[dict]:
    """Score every prompt of the grid on one model; one record per prompt.

    prefill_chunk: feed long prompts in chunks through the cache (bounded activation memory).
    """
    tok = em.tokenizer
    records = []
    eos = tok.eos_token_id
    for sample in tqdm(grid.samples, desc=f"NIAH {grid.task} on {label or em.name}", leave=False):
        ids = list(tok(sample.prompt, add_special_tokens=True)["input_ids"])
        gold = answer_ids(tok, sample)
        record = {**sample.to_dict(), "model": label or em.name, "mode": mode, "tokens": len(ids)}
        if em.max_length is not None and len(ids) + len(gold) > em.max_length:
            # Only reachable when a comparison model has another tokenizer or a shorter context.
            record.update(score=math.nan, skipped="does not fit the model's context")
            records.append(record)
            continue
        if mode == "generate":
            new = greedy_generate(em.model, ids, len(gold) + 4, eos_token_id=eos, prefill_chunk=prefill_chunk)
            text = tok.decode(new, skip_special_tokens=True)
            record.update(output=text, score=score_generation(text, sample.expected))
        else:
            logits, _ = last_logits(em.model, ids + gold, len(gold) + 1, chunk=prefill_chunk)
            record.update(score_teacher_forced(logits, gold))
            record["score"] = record["exact"]
        records.append(record)
    return records


def grid_table(grid: NiahGrid, records: list[dict]) -> dict:
    """Mean score x100 per (depth, length): {"lengths", "depths", "scores": rows=depths, cols=lengths}.

    A cell with no scored prompt (all skipped) is None; `average` is over scored prompts.
    """
    cells: dict[tuple[int, float], list[float]] = {}
    for r in records:
        if not (isinstance(r["score"], float) and math.isnan(r["score"])):
            cells.setdefault((r["length"], r["depth"]), []).append(100.0 * r["score"])
    scores = [[(sum(cells[(length, depth)]) / len(cells[(length, depth)])) if (length, depth) in cells else None
               for length in grid.lengths] for depth in grid.depths]
    flat = [s for values in cells.values() for s in values]
    skipped = len(grid.skipped) + sum(1 for r in records if "skipped" in r)
    return {"task": grid.task, "lengths": grid.lengths, "depths": grid.depths, "scores": scores,
            "average": (sum(flat) / len(flat)) if flat else None, "scored": len(flat), "skipped": skipped}
