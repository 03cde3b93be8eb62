"""One function per evaluation mode: run it on the model (and the source, when comparing), write its files.

Each returns (JSON-ready result, Markdown section) so that the command can end with one summary.
Printing goes through `echo` so the command decides where text goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SlconvertError
from ..tasks.haystack import load_haystack
from ..tasks.niah import answer_kinds
from . import plots, report
from .models import EvalModel
from .niah_run import build_grid, grid_table, run_grid

__all__ = ["RunContext", "RESULT_FILES", "run_niah", "run_tasks", "run_perplexity", "run_span_recall"]

# Every file an evaluation writes into --out (the modes below and the summary, `report.write_summary`). A folder that
# holds any of them holds an earlier run's results, which a new run replaces only with --force: an interrupted run
# keeps its finished modes' files without a summary.
RESULT_FILES = (
    "summary.json", "summary.md",
    "niah_results.json", "niah_results.csv", "niah_heatmap.png", "niah_table.csv", "niah_compare.png", "niah_diff.csv",
    "lm_eval_results.json", "lm_eval_results.csv", "lm_eval.png",
    "perplexity.json", "perplexity.csv",
    "span_recall.json", "span_recall.csv", "span_recall.png",
)


@dataclass
class RunContext:
    out: Path
    model: EvalModel
    base: EvalModel | None = None
    seed: int = 0
    skip_too_long: bool = False
    echo: object = print
    files: list[str] = field(default_factory=list)

    @property
    def max_length(self) -> int | None:
        """The tightest context of the models compared, so both see exactly the same prompts."""
        limits = [m.max_length for m in (self.model, self.base) if m is not None and m.max_length is not None]
        return min(limits) if limits else None

    def models(self) -> list[tuple[str, EvalModel]]:
        pairs = [("model", self.model)]
        if self.base is not None:
            pairs.append(("base", self.base))
        return pairs

    def wrote(self, *paths: Path) -> None:
        self.files.extend(str(p) for p in paths)


def run_niah(ctx: RunContext, *, task: str, lengths: list[int], depths: list[float], samples: int,
             haystack: str | None, mode: str, key_kind: str, value_kind: str,
             chunk: int | None = None, style: str = "slconvert", chat: bool = False,
             batch: int = 1) -> tuple[dict, str]:
    hay = load_haystack(haystack, ctx.seed, style)
    grid = build_grid(ctx.model.tokenizer, hay, task=task, lengths=lengths, depths=depths, samples=samples,
                      seed=ctx.seed, key_kind=key_kind, value_kind=value_kind, max_length=ctx.max_length,
                      mode=mode, skip_too_long=ctx.skip_too_long, style=style, chat=chat)
    if ctx.base is not None and ctx.base.tokenizer.get_vocab() != ctx.model.tokenizer.get_vocab():
        ctx.echo("note: the source model has another tokenizer; it sees the same prompt texts, whose token "
                 "lengths differ from the grid's (each record holds its own `tokens`)")
    tables, records, kinds = {}, [], {}
    for role, em in ctx.models():
        label = em.name if role == "model" else f"{em.name} (source)"
        rows = run_grid(em, grid, mode=mode, label=label, prefill_chunk=chunk, batch=batch)
        records.extend(rows)
        tables[role] = grid_table(grid, rows)
        answered = [r for r in rows if "output" in r]  # generated answers (not teacher-forced, not skipped)
        if answered:
            kinds[label] = answer_kinds(answered)
    table = tables["model"]
    result = {"task": task, "mode": mode, "style": style, "chat_template": chat, "haystack": hay.describe(),
              "key_kind": key_kind, "value_kind": value_kind, "samples_per_cell": samples, "table": table,
              "skipped": grid.skipped, "answer_kinds": kinds}
    name = ctx.model.name
    heading = f"### NIAH {task} ({mode})" if style == "slconvert" else f"### NIAH {task} ({mode}, {style} prompts)"
    section = [heading, "", report.format_grid(table, name)]
    ctx.wrote(plots.niah_heatmap(table, ctx.out / "niah_heatmap.png", name),
              report.write_csv(ctx.out / "niah_table.csv", report.grid_rows(table)))
    if ctx.base is not None:
        base, diff = tables["base"], report.diff_table(table, tables["base"])
        result.update(base_table=base, diff_table=diff)
        section += ["", report.format_grid(base, f"{ctx.base.name} (source)"), "",
                    report.format_grid(diff, "difference (converted - source)", signed=True)]
        ctx.wrote(plots.niah_comparison(table, base, diff, ctx.out / "niah_compare.png", name, ctx.base.name),
                  report.write_csv(ctx.out / "niah_diff.csv", report.grid_rows(diff)))
    for label, k in kinds.items():
        found = ", ".join(f"{c} found {n}" for n, c in k["values_found"].items()) + " of their values"
        other = "" if k["holds_another_number"] is None else \
            (f"; {k['holds_another_number']:.0%} hold a number that is none of them "
             f"({k['near_copy_of_a_value']:.0%} a near copy of one, 1-2 digits off)")
        section += ["", f"Answers of {label} ({k['prompts']} prompts): {found}; {k['repeats_a_value']:.0%} repeat an "
                        f"expected value{other}."]
    if grid.skipped:
        section += ["", f"{len(grid.skipped)} prompt(s) skipped: they do not fit {ctx.max_length} tokens."]
    ctx.wrote(report.write_json(ctx.out / "niah_results.json", {**result, "records": records}),
              report.write_csv(ctx.out / "niah_results.csv", records))
    text = "\n".join(section)
    ctx.echo(text)
    return result, text


def run_tasks(ctx: RunContext, spec: str, *, batch_size: int, limit: int | None, task_lengths: list[int] | None,
              task_metadata: dict, essays: str | None = None) -> tuple[dict, str]:
    from .lmeval import run_lm_eval

    if ctx.max_length is None:
        raise SlconvertError("the model declares no context length; pass --max-length for lm-eval tasks")
    per_model = {}
    for role, em in ctx.models():
        per_model[role] = run_lm_eval(em, spec, max_length=ctx.max_length, batch_size=batch_size, limit=limit,
                                      seed=ctx.seed, task_lengths=task_lengths, task_metadata=task_metadata,
                                      essays=essays)
    rows = []
    for task, metrics in per_model["model"]["results"].items():
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or key.endswith("stderr,none") or "," not in key:
                continue
            if value == -1 and key.split(",")[0].isdigit():  # a RULER length that was not asked for
                continue
            row = {"task": task, "metric": key.split(",")[0], ctx.model.name: value}
            if "base" in per_model:
                other = per_model["base"]["results"].get(task, {}).get(key)
                row[f"{ctx.base.name} (source)"] = other
                row["difference"] = value - other if isinstance(other, (int, float)) else None
            rows.append(row)
    result = {"tasks": spec, "max_length": ctx.max_length, "lm_eval": per_model, "table": rows}
    ctx.wrote(report.write_json(ctx.out / "lm_eval_results.json", result),
              report.write_csv(ctx.out / "lm_eval_results.csv", rows))
    if rows:
        ctx.wrote(plots.lm_eval_bars(rows, ctx.out / "lm_eval.png", ctx.model.name,
                                     ctx.base.name if "base" in per_model else None))
    text = f"### lm-eval tasks (max_length {ctx.max_length})\n\n{_markdown(rows)}"
    if read := per_model["model"].get("ruler_essays"):
        text += (f"\n\nRULER essay haystack: {read['words']} words in {read['files']} .txt files from "
                 f"{read['folder']}; sentences split by {read['sentences']}.")
    ctx.echo(text)
    return result, text


def run_perplexity(ctx: RunContext, path: str, docs: list[tuple[str, str]], *, chunk: int) -> tuple[dict, str]:
    """Perplexity of `docs`, read from `path` by `perplexity.load_documents` (before any model was loaded)."""
    from .perplexity import perplexity

    per_model = {role: perplexity(em, docs, chunk=chunk, skip_too_long=ctx.skip_too_long,
                                  label=em.name if role == "model" else f"{em.name} (source)")
                 for role, em in ctx.models()}
    rows = [row for result in per_model.values() for row in result["documents"]]
    summary = [{"model": r["model"], "documents": len(r["documents"]), "skipped": len(r["skipped"]),
                "tokens": r["tokens"], "perplexity": r["perplexity"]} for r in per_model.values()]
    result = {"path": str(path), "chunk_size": chunk, **per_model}
    ctx.wrote(report.write_json(ctx.out / "perplexity.json", result),
              report.write_csv(ctx.out / "perplexity.csv", rows))
    text = f"### Perplexity ({path}, chunks of {chunk} tokens, no truncation)\n\n{_markdown(summary)}"
    ctx.echo(text)
    return result, text


def run_span_recall(ctx: RunContext, *, texts: list[str] | None, length: int,
                    ids: list[list[int]] | None = None) -> tuple[dict, str]:
    """Span recall on `texts` (the user's, read before any model was loaded; `ids`: their checked token ids), else
    on `length` tokens of built-in text."""
    from .span_recall import span_recall

    result = span_recall(ctx.model, texts or [_builtin_text(ctx.model.tokenizer, length, ctx.seed)], ids=ids)
    rows = [{"layer": entry["layer"], "head": head, "window": entry["window"],
             "recall": entry["recall"][head] if entry["recall"] else None, "recall_all": entry["recall_all"][head]}
            for entry in result["layers"] for head in range(len(entry["recall_all"]))]
    matrix = [[r if r is not None else float("nan") for r in (entry["recall"] or [None] * len(entry["recall_all"]))]
              for entry in result["layers"]]
    layers = [entry["layer"] for entry in result["layers"]]
    ctx.wrote(report.write_json(ctx.out / "span_recall.json", result),
              report.write_csv(ctx.out / "span_recall.csv", rows),
              plots.span_recall_heatmap(matrix, layers, ctx.out / "span_recall.png", ctx.model.name,
                                        result["average"]))
    per_layer = [{"layer": e["layer"], "window": e["window"], "queries": e["queries_beyond_window"],
                  "mean recall": (sum(e["recall"]) / len(e["recall"])) if e["recall"] else None,
                  "min head": min(e["recall"]) if e["recall"] else None} for e in result["layers"]]
    text = (f"### Span recall ({result['tokens']} tokens; queries beyond the window; average "
            f"{100 * result['average']:.1f}%)\n\n{_markdown(per_layer)}")
    ctx.echo(text)
    return result, text


def _builtin_text(tokenizer, length: int, seed: int) -> str:
    """Built-in haystack text of exactly `length` tokens (same binary search as the needle prompts)."""
    from ..tasks.haystack import SyntheticHaystack
    from ..tasks.niah import prompt_length

    hay = SyntheticHaystack(seed)
    text = hay.text(4 * length)
    while prompt_length(tokenizer, text) < length:
        text = hay.text(2 * len(text))
    lo, hi = 0, len(text)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if prompt_length(tokenizer, text[:mid]) <= length:
            lo = mid
        else:
            hi = mid
    return text[:lo]


def _markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
