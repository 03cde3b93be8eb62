"""The conversion study's report: rows of measurements in, tables, JSON and plots out.

`conversion_study.py` writes one JSON line per measurement into OUT/rows.jsonl (the dense teacher's row, each job's
row at each token budget, failures) and OUT/settings.json; `report` turns them into OUT/study.json, OUT/study.md,
OUT/study.png (headline score against training tokens) and OUT/study-tasks.png (one panel per task), and `combine`
puts several studies of one teacher on the same prompts into one report. Every score is NIAH exact match (%); a
row's headline is the mean over the (task, length) cells that the teacher answers, and "final / teacher" is the
worst such cell's ratio; "worst length" compares the mean over those cells at each length, the NIAH score of one
context length. Needs no GPU and no model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell_prompts(spec) -> int:
    """Prompts in one (task, length) cell of the NIAH grid: depths x samples."""
    return len(spec["depths"]) * spec["samples"]


# what a teacher row's prompts depend on: a row measured with other values is not the same measurement
TEACHER_ROW_KEYS = ("tasks", "lengths", "depths", "samples")


def teacher_row_from_report(path: Path, rows: list[dict]) -> dict:
    """The dense teacher's row from the teacher.json that `conversion_study.py teacher` wrote: its NIAH on the
    cells it measured, for studies whose own teacher row is missing. Exits with one line when the file has no
    NIAH, when it measured none of the studies' prompts, or when one of its prompts differs from the studies'
    prompt of the same task, length, depth and sample (then it measured other prompts)."""
    try:
        niah = json.loads(Path(path).read_text())["niah"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        sys.exit(f"error: --teacher-niah {path}: cannot read the NIAH of a teacher.json ({err}); give the file "
                 "that `conversion_study.py teacher` wrote")
    expected = {(task, a["length"], a["depth"], a["sample"]): a["expected"]
                for row in rows for task, res in row.get("results", {}).items() for a in res.get("answers", [])}
    shared = 0
    for task, res in niah.items():
        for a in res.get("answers", []):
            want = expected.get((task, a["length"], a["depth"], a["sample"]))
            if want is not None and want != a["expected"]:
                sys.exit(f"error: --teacher-niah {path}: its {task} prompt at {a['length']} tokens, depth "
                         f"{a['depth']:g}, sample {a['sample']} expects {a['expected']}, the studies' {want}; it "
                         "measured other prompts (another seed or haystack)")
            shared += want is not None
    if not shared:
        sys.exit(f"error: --teacher-niah {path}: it measured none of the studies' prompts (tasks, lengths, depths "
                 "and samples differ)")
    return {"job": "teacher", "shape": "dense", "search_key": "-", "preset": "dense", "step": 0, "tokens": 0,
            "results": niah, "measured_by": str(path)}


def combine(out, runs: list[str], teacher_niah: str | None = None) -> dict:
    """One report over several studies of the same teacher and prompts (e.g. one setting changed per study):
    each `FOLDER=LABEL` contributes its rows with the label appended to the job names; the first study's
    measured teacher row stands for all, or the teacher part's NIAH in `teacher_niah` (its cells only; a
    study's failed teacher row stays listed). Exits with one line when a study is missing, or measured another
    teacher or other prompts (the settings that a score depends on must agree)."""
    out = Path(out)
    studies = []
    for spec in runs:
        folder, sep, label = spec.partition("=")
        if not sep or not label:
            sys.exit(f"error: combine: '{spec}' is not FOLDER=LABEL; name each study, e.g. study-a=lr-1e-3")
        try:
            settings = json.loads((Path(folder) / "settings.json").read_text())
            rows = [json.loads(line) for line in (Path(folder) / "rows.jsonl").read_text().splitlines()
                    if line.strip()]
        except (OSError, ValueError) as err:
            sys.exit(f"error: combine: cannot read {folder}/settings.json and rows.jsonl ({err}); "
                     "give the folders of earlier `conversion_study.py run`s")
        studies.append((folder, label, settings, rows))
    first = studies[0][2]
    for folder, _, settings, _ in studies[1:]:
        differ = [k for k in (*TEACHER_ROW_KEYS, "teacher_fingerprint") if settings.get(k) != first.get(k)]
        if differ:
            sys.exit(f"error: combine: {folder} measured other {', '.join(differ)} than {studies[0][0]}; "
                     "only studies of one teacher on the same prompts compare")
    combined, measured, failed = [], [], []
    for _, label, _, rows in studies:
        for row in rows:
            if row.get("preset") != "dense":
                combined.append({**row, "job": f"{row['job']} [{label}]", "label": label})
            else:  # a failed measurement stays listed as such
                (measured if "results" in row else failed).append({**row, "label": label})
    if teacher_niah:
        measured = [teacher_row_from_report(Path(teacher_niah), combined)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in measured[:1] + failed + combined))
    (out / "settings.json").write_text(json.dumps(
        {**{k: v for k, v in first.items() if k not in ("command", "train_overrides")},
         "combined_from": {label: {"folder": folder, "command": settings.get("command"),
                                   "train_overrides": settings.get("train_overrides")}
                           for folder, label, settings, _ in studies}}, indent=2) + "\n")
    return report(out)


def compare(teacher_answers: str, model_answers: list[str], out: str | None = None) -> dict:
    """The files of `conversion_study.py answers` (one model each, on one prompt grid) against the dense teacher's:
    per model (named by its file's stem) its headline score, worst cell, every cell's ratio and the ratio at each
    length (the tasks the teacher answers there, averaged). It measures a study's final models again on
    more prompts per cell than the study's own rows (e.g. --samples 4 where the study ran 2: the first two samples
    are the same prompts). Exits with one line when a file is unreadable or measured another grid than the
    teacher's."""
    def read(path):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            sys.exit(f"error: compare: cannot read {path} ({err}); give files that `conversion_study.py answers` wrote")

    teacher = read(teacher_answers)
    grid = {k: teacher.get(k) for k in (*TEACHER_ROW_KEYS, "seed")}
    models = []
    for path in model_answers:
        answers = read(path)
        differ = [k for k in grid if answers.get(k) != grid[k]]
        if differ:
            sys.exit(f"error: compare: {path} measured other {', '.join(differ)} than {teacher_answers}; measure "
                     "both on one grid")
        cells = {task: dict.fromkeys(res["by_length"]) for task, res in answers["results"].items()}
        for cell in _compared_cells(answers, teacher):
            cells[cell["task"]][str(cell["length"])] = cell["ratio"]
        models.append({"file": str(path), "model": answers.get("model"), "score": row_score(answers, teacher),
                       "worst_cell": _worst_cell(answers, teacher), "worst_length": _worst_length(answers, teacher),
                       "by_length": _length_ratios(answers, teacher), "ratios": cells,
                       "by_task": {t: r["by_length"] for t, r in answers["results"].items()}})
    result = {"teacher": {"file": str(teacher_answers), "model": teacher.get("model"),
                          "by_task": {t: r["by_length"] for t, r in teacher["results"].items()}},
              "grid": grid, "models": models}
    lines = [f"NIAH exact match %, {cell_prompts(grid)} prompts per (task, length) cell; ratio to the dense teacher "
             f"({teacher_answers}) where it answers:", "",
             "| model | task | " + " | ".join(str(n) for n in grid["lengths"]) + " |",
             "|---|---|" + "---|" * len(grid["lengths"])]
    for name, by_task, ratios in [("dense teacher", result["teacher"]["by_task"], None),
                                  *[(Path(m["file"]).stem, m["by_task"], m["ratios"]) for m in models]]:
        for task, by_length in by_task.items():
            cells = [_fmt(by_length.get(str(n))) + ("" if ratios is None or ratios[task].get(str(n)) is None
                                                    else f" ({ratios[task][str(n)]:.2f})") for n in grid["lengths"]]
            lines.append(f"| {name} | {task} | " + " | ".join(cells) + " |")
    for m in models:
        by_length = " / ".join(f"{c['ratio']:.2f}" for c in m["by_length"]) or "-"
        lines.append(f"\n{Path(m['file']).stem}: worst ratio {_fmt(m['worst_cell'] and m['worst_cell']['ratio'], 2)}"
                     f"{_cell_note(m['worst_cell'], grid)}; worst length {_length_note(m['worst_length'])}; "
                     f"by length {by_length} ({', '.join(str(c['length']) for c in m['by_length'])})")
    print("\n".join(lines))
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def row_score(row: dict, teacher: dict | None = None) -> float | None:
    """Headline exact match (%) of a row: the mean over the (task, length) cells that the dense teacher
    answers (score > 0), i.e. the retrieval the conversion must keep; without a teacher row, every cell."""
    values = []
    for task, res in row.get("results", {}).items():
        ref = (teacher or {}).get("results", {}).get(task, {}).get("by_length", {})
        for length, value in res["by_length"].items():
            if value is not None and (teacher is None or ref.get(length)):
                values.append(value)
    return sum(values) / len(values) if values else None


def row_answer_kinds(row: dict) -> dict:
    """{task: what the row's generated answers hold (`slconvert.tasks.niah.answer_kinds`)}, for the tasks whose
    answers the row kept."""
    from slconvert.tasks.niah import answer_kinds

    return {task: answer_kinds(res["answers"]) for task, res in row.get("results", {}).items() if res.get("answers")}


def report(out) -> dict:
    out = Path(out)
    settings = json.loads((out / "settings.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
    teacher = next((r for r in rows if r.get("preset") == "dense" and "results" in r), None)
    teacher_score = row_score(teacher, teacher) if teacher else None
    curves: dict[str, list] = {}
    for row in rows:
        if "results" in row and row["preset"] != "dense":
            curves.setdefault(row["job"], []).append(row)
    summary = []
    for job, points in sorted(curves.items()):
        points.sort(key=lambda r: r["step"])
        best = max(points, key=lambda r: row_score(r, teacher) or 0.0)
        worst = _worst_cell(points[-1], teacher) if teacher is not None else None
        worst_length = _worst_length(points[-1], teacher) if teacher is not None else None
        summary.append({"job": job, "shape": points[0]["shape"], "search_key": points[0]["search_key"],
                        "preset": points[0]["preset"], "label": points[0].get("label"),
                        "window": points[0].get("window"),
                        "steps": [p["step"] for p in points],
                        "curve": [(p["tokens"], row_score(p, teacher)) for p in points],
                        "final": row_score(points[-1], teacher), "final_tokens": points[-1]["tokens"],
                        "final_by_task": {t: v["by_length"] for t, v in points[-1]["results"].items()},
                        "final_answer_kinds": row_answer_kinds(points[-1]),
                        "completed": any(p.get("final_model") for p in points),
                        "time_limited": bool(points[-1].get("stopped_at_time_limit")),  # a resumed job may finish
                        "best": row_score(best, teacher), "best_tokens": best["tokens"],
                        "final_vs_teacher_min_ratio": worst and worst["ratio"], "final_worst_cell": worst,
                        "final_worst_length": worst_length,
                        "tokens_to_95pct_of_teacher": _tokens_to_target(points, teacher)})
    failed = [r for r in rows if r.get("failed")]
    result = {"settings": settings, "teacher": teacher and {"score": teacher_score, "results": teacher["results"],
                                                        "answer_kinds": row_answer_kinds(teacher),
                                                        **{k: teacher[k] for k in ("reused_from", "measured_by")
                                                           if k in teacher}},
              "jobs": summary, "failed": failed, "rows": rows}
    (out / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "study.md").write_text(_markdown(result))
    _plot(result, out / "study.png")
    _plot_tasks(result, out / "study-tasks.png")
    print(_markdown(result))
    return result


def _compared_cells(row: dict, teacher: dict) -> list[dict]:
    """Every (task, length) cell of `row` that the teacher answers (score > 0), as {task, length, score, teacher,
    ratio}: the cells the conversion must keep."""
    cells = []
    for task, res in row["results"].items():
        ref = teacher["results"].get(task, {}).get("by_length", {})
        for length, value in res["by_length"].items():
            if value is not None and ref.get(length):
                cells.append({"task": task, "length": int(length), "score": value, "teacher": ref[length],
                              "ratio": value / ref[length]})
    return cells


def _worst_cell(row: dict, teacher: dict) -> dict | None:
    """The compared cell of the smallest ratio converted / teacher (of equal ratios, the one the teacher answers
    least), so a report can say how many prompts the ratio rests on."""
    cells = _compared_cells(row, teacher)
    return min(cells, key=lambda c: (c["ratio"], c["teacher"])) if cells else None  # ties: the fewest answers


def _length_ratios(row: dict, teacher: dict) -> list[dict]:
    """Per length, the mean over its compared cells (the tasks the teacher answers there) of the row and of the
    teacher, as {length, score, teacher, ratio}: NIAH at one context length, next to the teacher's."""
    by_length: dict[int, list[dict]] = {}
    for cell in _compared_cells(row, teacher):
        by_length.setdefault(cell["length"], []).append(cell)
    out = []
    for length, cells in sorted(by_length.items()):
        score = sum(c["score"] for c in cells) / len(cells)
        ref = sum(c["teacher"] for c in cells) / len(cells)
        out.append({"length": length, "score": score, "teacher": ref, "ratio": score / ref})
    return out


def _worst_length(row: dict, teacher: dict) -> dict | None:
    lengths = _length_ratios(row, teacher)
    return min(lengths, key=lambda c: c["ratio"]) if lengths else None


def _length_note(length: dict | None) -> str:
    """'0.81 (4096: 57.5 vs 70.8)': the worst length's ratio and its task-averaged scores."""
    if not length:
        return "-"
    return f"{length['ratio']:.2f} ({length['length']}: {length['score']:.1f} vs {length['teacher']:.1f})"


def _relative(row: dict, teacher: dict) -> float | None:
    """The smallest ratio converted / teacher over every (task, length) where the teacher scores > 0."""
    worst = _worst_cell(row, teacher)
    return worst and worst["ratio"]


def _tokens_to_target(points: list[dict], teacher: dict | None) -> int | None:
    if teacher is None:
        return None
    for point in points:
        ratio = _relative(point, teacher)
        if ratio is not None and ratio >= 0.95:
            return point["tokens"]
    return None


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def override_key(item: str) -> str:
    """The top-level recipe key that a KEY=VALUE training override sets ("data.niah_tasks=[...]" -> "data")."""
    return item.partition("=")[0].strip().split(".")[0]


def _markdown(result: dict) -> str:
    s = result["settings"]
    staged = any(override_key(item) == "curriculum" for item in s.get("train_overrides") or [])
    lines = [f"Conversion study on {s['card']}: teacher {Path(s['teacher']).name}, recipe {s['recipe']}, "
             f"{s['batch_size']} x {s['seq_len']} tokens per step"
             + (" (the curriculum of the training overrides sets each stage's length, and its batch where the stage names "
                "one)" if staged else "")
             + f", lr {s['lr']}, seed {s['seed']}; NIAH "
             f"{', '.join(s['tasks'])} at {', '.join(map(str, s['lengths']))} tokens, depths "
             f"{', '.join(map(str, s['depths']))}, {s['samples']} samples per (length, depth)"
             + (f"; training overrides: {'; '.join(s['train_overrides'])}" if s.get("train_overrides") else "") + ".",
             f"Each (task, length) cell holds {cell_prompts(s)} prompts, so one answer moves it by "
             f"{100.0 / max(1, cell_prompts(s)):.3g} points.", ""]
    for label, study in s.get("combined_from", {}).items():
        lines.insert(-1, f"[{label}]: {study['folder']}; training overrides: "
                         f"{'; '.join(study.get('train_overrides') or []) or 'none'}.")
    if result["teacher"]:
        answered = ", ".join(f"{task} {res['by_length']}" for task, res in result["teacher"]["results"].items())
        reused, report = result["teacher"].get("reused_from"), result["teacher"].get("measured_by")
        lines.append(f"Dense teacher, exact match % by task and length: {answered}"
                     + (f" (measured by the study in {reused})" if reused else "")
                     + (f" (measured by the teacher's training run, {report}; cells it did not measure are not "
                        "compared)" if report else "") + ". Scores below are the mean "
                     "over the cells the teacher answers (> 0), as %; 'final / teacher' is the worst such cell's ratio, "
                     "'worst length' the worst ratio of those cells' mean at one length.")
        if s.get("untrained") is False:
            lines.append("The converted models were not measured as converted (--no-untrained): each curve starts at "
                         "its first budget.")
        lines.append("")
    budgets = sorted({t for job in result["jobs"] for t, _ in job["curve"]})
    head = "| shape (W) | search key | preset | steps run | " + " | ".join(f"{t / 1e6:.1f}M tok" for t in budgets) + \
           " | final / teacher (worst cell) | worst length | tokens to >= 95% of teacher |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for job in result["jobs"]:
        at = dict(job["curve"])
        cells = " | ".join(_fmt(at.get(t)) for t in budgets)
        reach = job["tokens_to_95pct_of_teacher"]
        run = f"{job['steps'][-1]}" + ("" if job["completed"] else " (stopped)") + \
            (" (time limit)" if job.get("time_limited") else "")
        lines.append(f"| {job['shape']} ({job['window']}) | {job['search_key']} | {_preset(job)} | {run} | {cells} | "
                     f"{_fmt(job['final_vs_teacher_min_ratio'], 2)}{_cell_note(job.get('final_worst_cell'), s)} | "
                     f"{_length_note(job.get('final_worst_length'))} | "
                     f"{'not reached' if reach is None else f'{reach / 1e6:.1f}M'} |")
    for row in result["failed"]:
        lines.append(f"| {row['shape']} | {row['search_key']} | {_preset(row)} | failed: "
                     f"{row.get('reason') or 'exit ' + str(row.get('returncode'))} |")
    teacher = {"preset": "dense teacher", "shape": "-",
               "final_answer_kinds": (result["teacher"] or {}).get("answer_kinds") or {}}
    kinds = [(job, task, k) for job in [teacher, *result["jobs"]] for task, k in job["final_answer_kinds"].items()]
    if kinds:
        lines += ["", "Answers at each job's last budget (prompts by expected values found; shares of prompts):", "",
                  "| job | task | values found: prompts | repeats a value | holds another number | of which a near copy "
                  "(1-2 digits off) |", "|---|---|---|---|---|---|"]
        for job, task, k in kinds:
            spread = ", ".join(f"{n}: {c}" for n, c in k["values_found"].items())
            other, near = (f"{k[key]:.0%}" if k.get(key) is not None else "-"
                           for key in ("holds_another_number", "near_copy_of_a_value"))
            lines.append(f"| {_preset(job)} ({job['shape']}) | {task} | {spread} | {k['repeats_a_value']:.0%} | {other} "
                         f"| {near} |")
    return "\n".join(lines) + "\n"


def _cell_note(cell: dict | None, settings: dict) -> str:
    """' (multikey 8192: 3 vs 3 of 10)': the worst cell and the prompts its scores stand for (a multivalue prompt
    counts its share of values found), so a reader sees when one answer decides the ratio."""
    if not cell:
        return ""
    n = cell_prompts(settings)
    return (f" ({cell['task']} {cell['length']}: {cell['score'] * n / 100:.3g} vs {cell['teacher'] * n / 100:.3g} "
            f"of {n})")


def _preset(job: dict) -> str:
    """The preset, with the study's label in a combined report."""
    return job["preset"] + (f" [{job['label']}]" if job.get("label") else "")


def _panels(count: int, width: float, height: float):
    """A row of `count` plots sharing the y axis (exact match %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, count, figsize=(width * count, height), squeeze=False, sharey=True)


def _finish(fig, axes, titles: list[str], ylabel: str, suptitle: str, path: Path) -> None:
    """Titles, the training-token axis, the 0-100 range, the legend; then the PNG."""
    import matplotlib.pyplot as plt

    for ax, title in zip(axes[0], titles):
        ax.set_title(title)
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot(result: dict, path: Path) -> None:
    shapes = sorted({job["shape"] for job in result["jobs"]}) or ["-"]
    fig, axes = _panels(len(shapes), 6.5, 4.6)
    colors = {"attention": "tab:blue", "mixers": "tab:green", "all": "tab:red", "lora": "tab:purple"}
    titles = []
    for ax, shape in zip(axes[0], shapes):
        for job in (j for j in result["jobs"] if j["shape"] == shape):
            xs = [t / 1e6 for t, v in job["curve"] if v is not None]
            ys = [v for _, v in job["curve"] if v is not None]
            base = job["preset"].partition("+")[0]
            style = "-" if job["search_key"] == "span_mean" else "--"
            marker = "s" if "+" in job["preset"] else "o"
            ax.plot(xs, ys, style, marker=marker, color=None if job.get("label") else colors.get(base, "gray"),
                    label=f"{_preset(job)}, {job['search_key']}")
        if result["teacher"] and result["teacher"]["score"] is not None:  # None: the teacher answers no cell
            ax.axhline(result["teacher"]["score"], color="black", lw=1, ls=":", label="dense teacher")
        window = next((j["window"] for j in result["jobs"] if j["shape"] == shape), None)
        titles.append(f"{shape} (W = {window})")
    _finish(fig, axes, titles, "NIAH exact match, % (cells the dense teacher answers)",
            f"Conversion study, {result['settings']['card']}", path)


def task_curves(result: dict) -> dict:
    """{task: {job: [(tokens, mean exact match % over the lengths)]}} from the rows, and the teacher's mean per task
    under the job name "teacher"."""
    curves: dict = {}
    for row in result["rows"]:
        for task, res in (row.get("results") or {}).items():
            values = [v for v in res["by_length"].values() if v is not None]
            if values:
                curves.setdefault(task, {}).setdefault(row["job"], []).append((row["tokens"], sum(values) / len(values)))
    return {task: {job: sorted(points) for job, points in jobs.items()} for task, jobs in curves.items()}


def _plot_tasks(result: dict, path: Path) -> None:
    """One panel per task: each job's mean over the lengths against training tokens, the teacher as a line."""
    curves = task_curves(result)
    if not curves:
        return
    fig, axes = _panels(len(curves), 5.2, 4.2)
    for ax, (_, jobs) in zip(axes[0], sorted(curves.items())):
        for job, points in sorted(jobs.items()):
            if job == "teacher":
                ax.axhline(points[-1][1], color="black", lw=1, ls=":", label="dense teacher")
            else:
                ax.plot([t / 1e6 for t, _ in points], [v for _, v in points], "-o", ms=4, label=job)
    _finish(fig, axes, [f"NIAH {task} (mean over lengths)" for task in sorted(curves)], "exact match, %",
            f"Conversion study by task, {result['settings']['card']}", path)
