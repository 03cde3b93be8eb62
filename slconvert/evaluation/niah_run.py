"""Running a needle grid (lengths x depths x samples) on a model and aggregating it into a heatmap table.

Prompts are built once from the first model's tokenizer and reused verbatim (same text) for a
comparison model, so both heatmaps are measured on identical inputs. A prompt that would not fit
the model's context (prompt plus the tokens it may produce) is refused before any compute, or,
when the user asked for it, skipped and counted per cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..errors import SlconvertError
from ..tasks.haystack import Haystack
from ..tasks.niah import STYLES, NiahSample, build_sample, depth_ranges, generation_budget, score_sample
from .models import EvalModel, greedy_generate, last_logits
from .niah import score_teacher_forced

__all__ = ["NiahGrid", "check_cells", "check_shortest", "lengths_over", "build_grid", "run_grid", "grid_table", "MODES",
           "MAX_SAMPLES"]

MAX_SAMPLES = 1000  # NIAH prompts per (length, depth) cell (--samples): more is a typo, not a grid

MODES = ("generate", "teacher")


@dataclass
class NiahGrid:
    """The prompts of one run, and the (length, depth) cells skipped because they do not fit."""

    task: str
    lengths: list[int]
    depths: list[float]
    samples: list[NiahSample]
    skipped: list[dict] = field(default_factory=list)
    style: str = "slconvert"


def answer_ids(tokenizer, sample: NiahSample) -> list[int]:
    return list(tokenizer(sample.answer, add_special_tokens=False)["input_ids"])


def needed_tokens(tokenizer, sample: NiahSample, mode: str) -> int:
    """Tokens the model must hold: the prompt plus the answer (teacher-forced) or the generation budget."""
    gold = len(answer_ids(tokenizer, sample))
    return len(sample.input_ids) + (generation_budget(sample, gold) if mode == "generate" else gold)


def check_cells(depths: list[float], samples: int) -> None:
    """Refuse, in one line, a grid whose rows are no depths (percentages of the context, 0..100) or whose cells
    hold no prompt: the grid's shape alone shows it, before any model is loaded."""
    if samples < 1:
        raise SlconvertError(f"--samples {samples} must be at least 1")
    if samples > MAX_SAMPLES:  # every prompt of a length is built before the first runs: a typo would never start
        raise SlconvertError(f"--samples {samples} is more than {MAX_SAMPLES} prompts per cell; use at most "
                             f"{MAX_SAMPLES} (more depths or lengths give more prompts)")
    outside = [f"{depth:g}" for depth in depths if not 0 <= depth <= 100]
    if outside:
        raise SlconvertError(f"--depths {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} outside 0..100; "
                             "depths are percentages of the context, e.g. 0,50,100")


def lengths_over(lengths: list[int], max_length: int | None, style: str, skip_too_long: bool) -> list[int]:
    """The lengths whose prompts cannot fit `max_length` tokens whatever their text: a prompt takes the length less
    the style's generation budget (RULER counts it in the length), and its answer at least one token more.

    Refused in one line unless `skip_too_long`; either way their prompts are never built, since building a prompt
    of millions of tokens takes hours. Known before any model is loaded (the limit is in config.json), so the
    command checks them there; a prompt within this bound whose answer does not fit is found by `build_grid`."""
    budget = STYLES[style].budget or 0
    over = [length for length in lengths if max_length is not None and length - budget + 1 > max_length]
    if over and not skip_too_long:
        raise _too_long([str(length) for length in over], max_length)
    return over


# The longest shortest length `check_shortest` builds a prompt of.
FLOOR_CHECKED = 4096


def check_shortest(model_path, haystack: Haystack, lengths: list[int], *, task: str, depth: float, seed: int,
                   key_kind: str, value_kind: str, style: str, chat: bool) -> None:
    """Build the grid's first prompt at its shortest length and drop it: a length shorter than the prompt without
    haystack is refused in one line from the model's tokenizer alone, before any model loads (`build_grid` finds it
    only after). `lengths`: those that will be built (none of `lengths_over`'s, whose prompts could take hours).
    Only a shortest length up to `FLOOR_CHECKED` tokens is built here (and only then is the tokenizer read): a prompt
    without haystack is a few hundred tokens, and a long prompt is seconds of tokenizing that `build_grid` does
    again."""
    if lengths and min(lengths) <= FLOOR_CHECKED:
        from ..loading import load_tokenizer

        build_sample(load_tokenizer(model_path), haystack, task, min(lengths), depth, 0, seed=seed,
                     key_kind=key_kind, value_kind=value_kind, style=style, chat=chat)


def _too_long(lengths: list[str], max_length: int) -> SlconvertError:
    return SlconvertError(f"prompts of length {', '.join(lengths)} do not fit the model's {max_length} tokens; drop "
                          "those --lengths, raise --max-length, or pass --skip-too-long to skip and count them")


def build_grid(tokenizer, haystack: Haystack, *, task: str, lengths: list[int], depths: list[float],
               samples: int, seed: int, key_kind: str, value_kind: str, max_length: int | None, mode: str,
               skip_too_long: bool, style: str = "slconvert", chat: bool = False) -> NiahGrid:
    """Every prompt of the grid. style "slconvert" (the default here) builds this tool's own prompts; "ruler"
    RULER's, each prompt's depth drawn at random within its row's range (see `slconvert.tasks.niah`)."""
    check_cells(depths, samples)
    if mode not in MODES:
        raise SlconvertError(f"unknown NIAH mode {mode!r}; use one of {', '.join(MODES)}")
    if style not in STYLES:
        raise SlconvertError(f"unknown NIAH prompt style {style!r}; use one of {', '.join(STYLES)}")
    unbuilt = set(lengths_over(lengths, max_length, style, skip_too_long))
    grid = NiahGrid(task=task, lengths=list(lengths), depths=list(depths), samples=[], style=style)
    ranges = dict(zip(depths, depth_ranges(list(depths)))) if STYLES[style].random_depths else {}
    too_long: list[str] = []
    cells = [(length, depth) for length in lengths for depth in depths]
    with tqdm(cells, desc=f"building {task} prompts", leave=False) as progress:
        for length, depth in progress:
            for index in range(samples):
                skipped = {"length": length, "depth": depth, "sample": index, "max_length": max_length,
                           "reason": "does not fit the model's context"}
                if length in unbuilt:
                    grid.skipped.append(skipped)
                    continue
                sample = build_sample(tokenizer, haystack, task, length, depth, index, seed=seed, key_kind=key_kind,
                                      value_kind=value_kind, style=style, depth_range=ranges.get(depth), chat=chat)
                need = needed_tokens(tokenizer, sample, mode)
                if max_length is not None and need > max_length:
                    grid.skipped.append({**skipped, "needed_tokens": need})
                    too_long.append(f"{length} (needs {need})")
                    continue
                grid.samples.append(sample)
    if too_long and not skip_too_long:
        raise _too_long(sorted(set(too_long), key=lambda s: int(s.split()[0])), max_length)
    return grid


def run_grid(em: EvalModel, grid: NiahGrid, *, mode: str, label: str | None = None,
             prefill_chunk: int | None = None, batch: int = 1) -> list[dict]:
    """Score every prompt of the grid on one model; one record per prompt, in the grid's order.

    prefill_chunk: feed long prompts in chunks through the cache (bounded activation memory).
    batch: in generate mode, decode up to this many prompts of the same token length side by side (a grid's
    prompts of one length have one token length, so no padding); greedy, so each prompt's output is its own
    (up to the rounding of batched kernels).
    """
    tok = em.tokenizer
    records: list[dict | None] = [None] * len(grid.samples)
    waiting: dict[int, list[tuple[int, list[int], int]]] = {}  # token length -> (index, ids, budget)

    def generate(group: list[tuple[int, list[int], int]]) -> None:
        stops = _stop_tokens(em, grid.samples[group[0][0]])
        outputs = greedy_generate(em.model, [ids for _, ids, _ in group], [budget for *_, budget in group],
                                  eos_token_id=stops, prefill_chunk=prefill_chunk)
        for (index, _, _), new in zip(group, outputs):
            text = tok.decode(new, skip_special_tokens=True)
            records[index].update(output=text, score=score_sample(grid.samples[index], text))
        progress.update(len(group))

    # closed on an error too, so that the error's line does not land inside the bar
    with tqdm(total=len(grid.samples), desc=f"NIAH {grid.task} on {label or em.name}", leave=False) as progress:
        for index, sample in enumerate(grid.samples):
            ids = list(tok(sample.prompt, add_special_tokens=sample.special_tokens)["input_ids"])
            gold = answer_ids(tok, sample)
            budget = generation_budget(sample, len(gold))
            records[index] = {**sample.to_dict(), "model": label or em.name, "mode": mode, "tokens": len(ids)}
            needs = len(ids) + (budget if mode == "generate" else len(gold))
            if em.max_length is not None and needs > em.max_length:
                # Only reachable when a comparison model has another tokenizer or a shorter context.
                records[index].update(score=math.nan, skipped="does not fit the model's context")
                progress.update(1)
            elif mode == "generate":
                group = waiting.setdefault(len(ids), [])
                group.append((index, ids, budget))
                if len(group) >= max(1, batch):
                    generate(waiting.pop(len(ids)))
            else:
                logits, _ = last_logits(em.model, ids + gold, len(gold) + 1, chunk=prefill_chunk)
                records[index].update(score_teacher_forced(logits, gold))
                records[index]["score"] = records[index]["exact"]
                progress.update(1)
        for group in waiting.values():
            generate(group)
    return records


def _stop_tokens(em: EvalModel, sample: NiahSample) -> list[int]:
    """The tokenizer's end of sequence; in the RULER style also the model's own end-of-turn tokens."""
    stops = [em.tokenizer.eos_token_id]
    if sample.style != "slconvert":
        config = getattr(em.model, "generation_config", None)
        extra = getattr(config, "eos_token_id", None)
        stops += list(extra) if isinstance(extra, (list, tuple)) else [extra]
    return [t for t in dict.fromkeys(stops) if t is not None]


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
