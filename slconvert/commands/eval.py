"""`slconvert eval MODEL`: needle grid, lm-eval tasks, long-document perplexity and span recall.

Modes combine freely in one run; `--compare BASE` runs the source checkpoint on exactly the same
inputs. Every run writes its files to --out and ends with summary.json / summary.md there.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from ..devices import resolve_device
from ..errors import SlconvertError
from ..outputs import check_output_dir, removed_on_failure

_DEFAULT_DEPTHS = ",".join(str(d) for d in range(0, 101, 10))
_MAX_VALUES = 1000  # a list option giving more values than this is a typo (a range's step), not a grid
_MAX_SEED = 2**32 - 1  # numpy's seeds stop here (lm-eval seeds numpy with --seed)


def _numbers(text: str, option: str, kind=int, example: str = "1024,4096 or 4096:16384:4096") -> list:
    """"1024,4096" or "0:100:25" (start:stop:step, stop included) -> list of numbers."""
    values: list = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if ":" in part:
                start, stop, step = (kind(x) for x in part.split(":"))
                if not all(map(math.isfinite, (start, stop, step))) or step <= 0:
                    raise ValueError
                if stop < start:
                    raise SlconvertError(f"{option} {part!r} runs backwards (start {start} > stop {stop}); write "
                                         "start:stop:step with start <= stop")
                if (stop - start) / step >= _MAX_VALUES:
                    raise SlconvertError(f"{option} {part!r} gives more than {_MAX_VALUES} values; use a larger step")
                # i * step from start, not a running sum: a fractional step keeps its stop (0:0.3:0.1 ends at 0.3)
                # and no value carries the sum's rounding (0.30000000000000004)
                count = int((stop - start) / step + 1e-9) + 1
                values.extend(round(start + i * step, 12) for i in range(count))  # an int stays an int
            else:
                values.append(kind(part))
                if not math.isfinite(values[-1]):
                    raise ValueError
    except ValueError as err:
        raise SlconvertError(f"{option} {text!r} is not a comma-separated list of numbers "
                             f"(or start:stop:step); e.g. {example}") from err
    if not values:
        raise SlconvertError(f"{option} is empty; give at least one value")
    return list(dict.fromkeys(values))


def _token_counts(text: str, option: str) -> list[int]:
    """`_numbers` for an option of lengths in tokens: each must be positive."""
    counts = _numbers(text, option)
    if any(n < 1 for n in counts):
        raise SlconvertError(f"{option} {text} must be positive token counts")
    return counts


@click.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--niah", is_flag=True, help="Needle-in-a-haystack grid (depth x length heatmap).")
@click.option("--niah-style", type=click.Choice(["ruler", "slconvert"]), default="ruler", show_default=True,
              help="NIAH prompts. ruler: RULER's wording, noise haystack, a random depth (seeded) around each row, "
                   "a 128-token generation budget counted in the length, case-insensitive string_match_all. "
                   "slconvert: this tool's earlier prompts (the demo, recipes and recorded results): built-in "
                   "haystack, exact depths, answer-length budget, case-sensitive match.")
@click.option("--lengths", default="1024,2048,4096", show_default=True,
              help="NIAH lengths in tokens (ruler style: prompt + 128-token generation budget, as RULER counts).")
@click.option("--depths", default=_DEFAULT_DEPTHS, show_default=True,
              help="NIAH needle depths in percent (table rows; ruler style: each prompt's depth is drawn at random, "
                   "seeded, among the depths nearer its row than any other).")
@click.option("--samples", type=int, default=4, show_default=True, help="NIAH prompts per (length, depth) cell.")
@click.option("--haystack", default=None,
              help="NIAH haystack: 'noise' (RULER's noise sentences; default of the ruler style), 'builtin' "
                   "(generated sentences; default of the slconvert style), 'repeat' (pass-key filler), or text "
                   "files/folders, comma-separated (ruler style: RULER's essay haystack, e.g. a folder of "
                   "Paul Graham's essays as .txt; nothing is downloaded).")
@click.option("--chat-template", is_flag=True,
              help="NIAH: wrap each question in the tokenizer's chat template (instruction models); the answer "
                   "prefix starts the assistant's turn.")
@click.option("--task", "niah_task", type=click.Choice(["single", "multikey", "multivalue", "multiquery", "passkey"]),
              default="single", show_default=True, help="NIAH task (RULER's counterparts: see the README).")
@click.option("--mode", type=click.Choice(["generate", "teacher"]), default="generate", show_default=True,
              help="NIAH scoring: greedy generation, or teacher-forced (no generation).")
@click.option("--key-kind", type=click.Choice(["words", "numbers", "uuids"]), default="words", show_default=True)
@click.option("--value-kind", type=click.Choice(["words", "numbers", "uuids"]), default="numbers",
              show_default=True)
@click.option("--compare", "base", type=click.Path(path_type=Path), default=None,
              help="Source checkpoint to run on the same inputs, side by side.")
@click.option("--ruler", is_flag=True,
              help="lm-eval's own RULER needle tasks that need no download (niah_single_1, niah_multikey_2, "
                   "niah_multikey_3) at --task-lengths, and with --ruler-essays also its essay tasks; needs the "
                   "`wonderwords` and `nltk` packages.")
@click.option("--ruler-essays", default=None, metavar="DIR",
              help="Folder of .txt essays (Paul Graham's, as RULER uses; its subfolders too, in path order): the "
                   "haystack of lm-eval's RULER essay tasks (niah_single_2, niah_single_3, niah_multikey_1, "
                   "niah_multivalue, niah_multiquery), which are refused without it. Nothing is downloaded; "
                   "sentences are split by nltk's punkt_tab model when installed, else by untrained Punkt.")
@click.option("--tasks", default=None, help="lm-eval tasks: names or YAML paths, comma-separated (e.g. slc_passkey).")
@click.option("--task-lengths", default=None, help="Prompt lengths for the shipped slc_* needle tasks.")
@click.option("--task-metadata", "--metadata", "task_metadata", default=None, help='Extra lm-eval task metadata as JSON, e.g. \'{"num_samples": 4}\'.')
@click.option("--limit", type=int, default=None, help="lm-eval: at most this many documents per task.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="lm-eval batch size; NIAH generation decodes this many prompts of one length side by side.")
@click.option("--perplexity", "ppl_path", default=None, help="Text file, .jsonl or folder of long documents.")
@click.option("--chunk-size", type=int, default=4096, show_default=True, help="Prefill chunk in tokens (perplexity and NIAH prompts), fed through the cache.")
@click.option("--span-recall", is_flag=True, help="Dense attention mass inside the selected spans + window.")
@click.option("--span-text", default=None, help="Text file/folder for --span-recall (default: built-in text).")
@click.option("--span-length", type=int, default=2048, show_default=True,
              help="Tokens of built-in text for --span-recall.")
@click.option("--max-length", type=int, default=None,
              help="Context limit in tokens (default: the checkpoint's max_position_embeddings).")
@click.option("--skip-too-long", is_flag=True, help="Skip (and count) inputs over the context limit instead of failing.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... (auto: cuda if present).")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of prompts, haystack and lm-eval.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("eval-output"), show_default=True,
              help="Folder for results, figures and the summary.")
@click.option("--force", is_flag=True, help="Write into an --out that holds an earlier evaluation, replacing its summary.")
def eval_command(model, niah, niah_style, lengths, depths, samples, haystack, chat_template, niah_task, mode, key_kind,
                 value_kind, base, ruler, ruler_essays, tasks,
                 task_lengths, task_metadata, limit, batch_size, ppl_path, chunk_size, span_recall, span_text,
                 span_length, max_length, skip_too_long, device, dtype, seed, out, force):
    """Evaluate MODEL (converted or not): --niah, --ruler, --tasks, --perplexity and/or --span-recall."""
    from ..evaluation import report
    from ..evaluation.models import check_eval_checkpoint, load_eval_model
    from ..evaluation.niah_run import check_cells, check_shortest, lengths_over
    from ..evaluation.perplexity import load_documents
    from ..evaluation.runner import RESULT_FILES, RunContext, run_niah, run_perplexity, run_span_recall, run_tasks
    from ..tasks.niah import STYLES

    if ruler:
        from ..evaluation.lmeval import with_ruler

        tasks = with_ruler(tasks, essays=ruler_essays is not None)
    if not (niah or tasks or ppl_path or span_recall):
        raise SlconvertError("nothing to evaluate; add at least one of --niah, --ruler, --tasks, --perplexity, "
                             "--span-recall")
    length_list = _token_counts(lengths, "--lengths") if niah else []
    depth_list = _numbers(depths, "--depths", float, example="0,50,100 or 0:100:10 (percent)") if niah else []
    if niah:
        check_cells(depth_list, samples)
    task_length_list = _token_counts(task_lengths, "--task-lengths") if task_lengths else None
    if not 0 <= seed <= _MAX_SEED:
        raise SlconvertError(f"--seed {seed} is outside 0..{_MAX_SEED} (numpy's seeds, which lm-eval sets); use a "
                             "seed in that range")
    try:
        metadata = json.loads(task_metadata) if task_metadata else {}
    except json.JSONDecodeError as err:
        raise SlconvertError(f"--task-metadata is not valid JSON ({err.msg}); e.g. '{{\"num_samples\": 4}}'") from err
    if not isinstance(metadata, dict):
        raise SlconvertError("--task-metadata must be a JSON object, e.g. '{\"num_samples\": 4}'")
    if "max_seq_lengths" in metadata:  # lm-eval's own spelling of --task-lengths: read as it, checked as it
        if task_length_list:
            raise SlconvertError("--task-lengths and max_seq_lengths in --task-metadata both set the task lengths; "
                                 "give them once")
        given = metadata.pop("max_seq_lengths")
        given = [given] if isinstance(given, int) else given
        if not (isinstance(given, list) and given
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in given)):
            raise SlconvertError(f"--task-metadata max_seq_lengths is {json.dumps(given)}, not a list of positive "
                                 "token counts; e.g. --task-lengths 4096,8192")
        task_length_list = list(dict.fromkeys(given))
    if chunk_size < 1:
        raise SlconvertError(f"--chunk-size {chunk_size} must be at least 1 token")
    if batch_size < 1:
        raise SlconvertError(f"--batch-size {batch_size} must be at least 1")
    if max_length is not None and max_length < 1:
        raise SlconvertError(f"--max-length {max_length} must be a positive number of tokens")
    if limit is not None and limit < 1:
        raise SlconvertError(f"--limit {limit} must be at least 1 document per task (leave it out for all)")
    if span_text and not span_recall:
        raise SlconvertError("--span-text is read only by --span-recall; add --span-recall, or leave --span-text out")
    if span_recall and span_length < 2:
        raise SlconvertError(f"--span-length {span_length} must be at least 2 tokens")
    check_output_dir(out, {"MODEL": model, "--compare": base}, results=RESULT_FILES, force=force)
    resolve_device(device)

    # Everything below reads the inputs, and nothing loads a model, so that bad input fails in seconds.
    if tasks:  # task files and names lm-eval does not know, refused tasks and a missing essay folder
        from ..evaluation.lmeval import check_tasks

        check_tasks(tasks, ruler_essays)
    elif ruler_essays is not None:
        raise SlconvertError("--ruler-essays is read only by lm-eval's RULER essay tasks; add --ruler or name them "
                             "in --tasks, or leave --ruler-essays out")
    if niah:  # a missing or unknown haystack
        from ..tasks.haystack import load_haystack

        hay = load_haystack(haystack, seed, niah_style)
    for option, value in (("--perplexity", ppl_path), ("--span-text", span_text)):
        if value and not Path(value).expanduser().exists():
            raise SlconvertError(f"{option} {value} does not exist; pass a text file, a .jsonl file or a folder")
    docs = load_documents(ppl_path) if ppl_path else None
    span_texts = [text for _, text in load_documents(span_text)] if span_recall and span_text else None
    limits = [check_eval_checkpoint(path, max_length, chat=niah and chat_template) for path in (model, base)
              if path is not None]
    tightest = min((n for n in limits if n is not None), default=None)
    if niah:  # lengths no prompt of which fits the tightest context (RunContext.max_length): never built
        unbuilt = set(lengths_over(length_list, tightest, niah_style, skip_too_long))
        check_shortest(model, hay, [n for n in length_list if n not in unbuilt], task=niah_task,
                       depth=depth_list[0], seed=seed, key_kind=key_kind, value_kind=value_kind, style=niah_style,
                       chat=chat_template)
    over = [str(n) for n in task_length_list or () if tightest is not None and n > tightest]
    if over:  # a task builds every prompt before the first runs; lm-eval requests are never truncated
        raise SlconvertError(f"--task-lengths {', '.join(over)} do not fit the model's {tightest} tokens; drop them "
                             "or raise --max-length")
    if span_recall:  # span recall reads MODEL alone, in one forward of the whole text
        from ..evaluation.span_recall import check_converted, check_length
        from ..loading import converted_params

        check_converted(model)
        if not span_text:
            check_length(span_length, converted_params(model).window, f"--span-length {span_length}")
        if not span_text and limits[0] is not None and span_length > limits[0]:
            raise SlconvertError(f"--span-length {span_length} is over the model's {limits[0]} tokens; lower it or "
                                 "raise --max-length")

    em = load_eval_model(model, device=device, dtype=dtype, max_length=max_length)
    span_ids = None
    if span_texts:  # their lengths need the tokenizer: checked before any task runs, and tokenized once
        from ..evaluation.span_recall import check_texts

        span_ids = check_texts(em, span_texts, "the longest --span-text text")
    base_em = load_eval_model(base, device=device, dtype=dtype, max_length=max_length) if base else None
    ctx = RunContext(out=out, model=em, base=base_em, seed=seed, skip_too_long=skip_too_long, echo=click.echo)
    modes = {  # in this order; each writes its own files
        "niah": niah and (lambda: run_niah(ctx, task=niah_task, lengths=length_list, depths=depth_list,
                                           samples=samples, haystack=haystack, mode=mode, key_kind=key_kind,
                                           value_kind=value_kind, chunk=chunk_size, style=niah_style,
                                           chat=chat_template, batch=batch_size)),
        "lm_eval": bool(tasks) and (lambda: run_tasks(ctx, tasks, batch_size=batch_size, limit=limit,
                                                      task_lengths=task_length_list, task_metadata=metadata,
                                                      essays=ruler_essays)),
        "perplexity": bool(ppl_path) and (lambda: run_perplexity(ctx, ppl_path, docs, chunk=chunk_size)),
        "span_recall": span_recall and (lambda: run_span_recall(ctx, texts=span_texts, ids=span_ids,
                                                                   length=span_length)),
    }
    finished: list[str] = []  # the files of the modes that finished: a later failure keeps them
    with removed_on_failure(out, finished=lambda: finished):
        results, sections = {}, []
        for name, run in modes.items():
            if run:
                results[name], text = run()
                sections.append(text)
                finished[:] = ctx.files

        command = {"argv": sys.argv[1:], "model": str(model), "compare": str(base) if base else None,
                   "niah": {"task": niah_task, "mode": mode, "style": niah_style, "chat_template": chat_template,
                            "lengths": length_list, "depths": depth_list, "samples": samples,
                            "haystack": haystack or STYLES[niah_style].haystack, "key_kind": key_kind,
                            "value_kind": value_kind} if niah else None,
                   "tasks": tasks, "ruler_essays": ruler_essays, "task_lengths": task_length_list,
                   "task_metadata": metadata, "limit": limit,
                   "perplexity": ppl_path, "chunk_size": chunk_size if ppl_path else None,
                   "span_recall": {"text": span_text, "length": span_length} if span_recall else None,
                   "max_length": ctx.max_length, "skip_too_long": skip_too_long, "device": device, "dtype": dtype}
        models = [m.describe() for _, m in ctx.models()]
        paths = report.write_summary(out, command=command, seeds={"seed": seed}, models=models, results={
            **{k: _headline(k, v) for k, v in results.items()}, "files": ctx.files}, sections=sections)
        click.echo(f"wrote {len(ctx.files) + len(paths)} files to {out} (summary: {paths[1]})")


def _headline(mode: str, result: dict) -> dict:
    """The numbers a reader wants first; the full results are in the mode's own JSON file."""
    if mode == "niah":
        keep = {"table": result["table"], "skipped": len(result["skipped"])}
        if "diff_table" in result:
            keep.update(base_table=result["base_table"], diff_table=result["diff_table"])
        return keep
    if mode == "lm_eval":
        return {"table": result["table"], "max_length": result["max_length"]}
    if mode == "perplexity":
        return {role: {"perplexity": r["perplexity"], "tokens": r["tokens"], "skipped": len(r["skipped"])}
                for role, r in result.items() if isinstance(r, dict) and "perplexity" in r}
    return {"average": result["average"], "tokens": result["tokens"],
            "layers": [{"layer": e["layer"], "recall": e["recall"]} for e in result["layers"]]}
