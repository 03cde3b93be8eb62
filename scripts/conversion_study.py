"""Conversion study: which training makes a converted model retrieve again, and after how many tokens.

One command converts a dense teacher at several Superlinear shapes and search keys, trains each training
preset with `recipes/conversion-study.yaml`, and measures NIAH (single, multikey, multivalue) on the live
model at fixed token budgets (step 0 = as converted), next to the dense teacher on the same prompts. Jobs
run as parallel processes on one GPU (a small teacher leaves the GPU mostly idle in any one process).
Every measurement is one JSON line in OUT/rows.jsonl as soon as it exists, so a run cut short keeps what
it measured; `report` turns the rows into OUT/study.json, OUT/study.png and OUT/study.md. Each job builds its
prompts in a side process while it trains, and with `--deadline` stops training `--reserve` seconds early, so it
is measured and can be resumed (`run --resume`).

    python scripts/conversion_study.py run --out study-output            # the default study (GPU)
    python scripts/conversion_study.py run --out s --shapes balanced --keys span_mean --presets mixers \\
        --steps 200 --evals 100,200 --parallel 1                         # one job
    python scripts/conversion_study.py report study-output               # tables and plot again
    python scripts/conversion_study.py combine both s-a=lr-1e-3 s-b=lr-3e-4  # one report over two studies
    python scripts/conversion_study.py answers MODEL --tasks multivalue --lengths 2048,4096 --out a.json
                                    # one model (dense or converted) on the study's prompts, with its answers
    python scripts/conversion_study.py compare teacher.json a.json       # answers against the teacher's, per cell

    # the larger study (GPU): train the 27M-parameter teacher dense to 8K tokens, then study it at 2K-16K
    python scripts/conversion_study.py teacher --out study-output/teacher
    python scripts/conversion_study.py probes --out study-output/probes --minutes 4 --gpus 2 \
        --common "curriculum=[{seq_len: 128, steps: 4000, niah_tasks: [single]}];max_steps=4000" \
        "b8=lr=1e-3" "b32=lr=1e-3;batch_size=32;micro_batch_size=32"
                                                                         # which teacher setting starts to learn
    python scripts/conversion_study.py run --out study-output/big --teacher study-output/teacher/model \
        --lengths 2048,4096,8192,16384 --seq-len 4096 --batch-size 8 \
        --train "data.niah_tasks=[single, multikey, multivalue];lm_average=sample"   # train on the teacher's tasks
    python scripts/conversion_study.py run --out study-output/big2 --teacher study-output/teacher/model ... \
        --teacher-row study-output/big --no-untrained   # the teacher's row from the study before, no step 0

`make study` runs the default. The rows keep every job and every budget, failures included; the
report says which settings were run, on which card, with how many tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report's module beside this file, however loaded
from study_report import (  # noqa: E402
    TEACHER_ROW_KEYS,
    cell_prompts,
    combine,
    compare,
    override_key,
    report,
    row_answer_kinds,
    row_score,
)

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "conversion-study.yaml"

# Superlinear shapes of the study, scaled to a teacher that retrieves at 512-1024 tokens: p <= 0.6 and
# W <= 1/16 of the shortest evaluated length. "balanced" is the paper's balanced exponents (p = rho = 0.5,
# b_b = 2) with b_f = 1; "released" its released exponents and factors (p = rho = 0.55, 3 / 1).
SHAPES = {
    "balanced": dict(sw_index=3, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                     forward_factor=1.0),
    "released": dict(sw_index=5, num_spans=3, search_power=0.55, span_power=0.55, backward_factor=3.0,
                     forward_factor=1.0),
}
PRESETS = ("attention", "mixers", "all", "lora")
TEACHER_RECIPE = ROOT / "recipes" / "study-teacher.yaml"
PROBE_BASE = ["stop_at_step=0"]  # a probe runs to its time limit on its own max_steps, not to the teacher's stop


def scaled(shape: dict, shortest: int) -> dict:
    """The shape with the largest sw whose window W is at most 1/16 of the shortest evaluated length."""
    _importable()
    from slkernels import SuperlinearConfig

    sw = 0
    while SuperlinearConfig(**{**shape, "sw_index": sw + 1}).window <= shortest // 16:
        sw += 1
    return {**shape, "sw_index": sw}
# A job named "<preset>+warmup" runs `recipes/router-warmup.yaml` (KL to the dense span mass) first.
WARMUP_OVERRIDES = ["max_steps=100", "seq_len=1024", "batch_size=16", "micro_batch_size=16", "lr=1e-4",
                    "save_every=0", "recall_every=0", "recall_rows=256", "data.niah_fraction=0.5"]


def _importable() -> None:
    """Import slconvert / slkernels from this checkout when they are not installed (GPU machines)."""
    try:
        import slkernels  # noqa: F401

        import slconvert  # noqa: F401
    except ImportError:
        links = Path(tempfile.mkdtemp(prefix="slconvert-path-"))
        (links / "slkernels").symlink_to(ROOT / "kernels")
        (links / "slconvert").symlink_to(ROOT / "slconvert")
        sys.path.insert(0, str(links))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(links), os.environ.get("PYTHONPATH")]))


def _child_env(threads: int) -> dict:
    """Environment of the study's child processes (jobs, probes). PYTHONSAFEPATH: `python -m` must not put the
    working folder on sys.path, where a checkout's kernels/ would shadow the `kernels` package transformers seeks."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


# ----- evaluation of a live model -----------------------------------------------------------------------


SETUP_S = 30.0  # a job's training loop starts about this long after its time limit is set (model load, compile)
MIN_TRAIN_S = 60.0  # run_jobs starts no job with less training time than this before its stop
_GRIDS: dict = {}  # task -> NIAH grid; a job process evaluates one spec with one tokenizer
_PREBUILD: list = []  # (process, file) of `prebuild_grids`, if one was started
GRID_KEYS = ("tasks", "lengths", "depths", "samples", "seed")  # what a job's prompts depend on, with the tokenizer


# A dense float32 model with grouped KV heads runs SDPA on PyTorch's math path, which holds the whole score matrix:
# a cell's 10 prompts x 8 heads x 16K x 16K x 4 bytes is 80 GiB. Its prompts go in through the cache in chunks
# that hold the scores under this many bytes (chunked and whole prefill agree: tests/test_eval_models.py).
DENSE_SCORE_BYTES = 2 ** 32


def dense_prefill_chunk(model, spec: dict) -> int:
    """Prefill chunk (a power of two, at least 256 tokens) that keeps a dense model's float32 attention scores
    for one batch of the longest prompts under DENSE_SCORE_BYTES."""
    batch = spec.get("eval_batch") or cell_prompts(spec)
    per_token = batch * model.config.num_attention_heads * max(spec["lengths"]) * 4
    chunk = max(1, DENSE_SCORE_BYTES // per_token)
    return max(256, 1 << (chunk.bit_length() - 1))


def _build_grids(tokenizer, spec: dict) -> None:
    """The job's NIAH prompts, task by task, into _GRIDS: the same prompts at every budget of a job."""
    from slconvert.evaluation.haystack import load_haystack
    from slconvert.evaluation.niah_run import build_grid

    for task in spec["tasks"]:
        if task not in _GRIDS:
            _GRIDS[task] = build_grid(tokenizer, load_haystack(None, spec["seed"]), task=task, lengths=spec["lengths"],
                                      depths=spec["depths"], samples=spec["samples"], seed=spec["seed"],
                                      key_kind="words", value_kind="numbers", max_length=None, mode="generate",
                                      skip_too_long=False)


def prebuild_grids(tokenizer_dir: Path, spec: dict, work: Path) -> None:
    """Start building the job's prompts in another process while the GPU trains (about a minute of CPU work at
    2K-16K, which the first measurement would otherwise wait for); `evaluate` waits for it and takes its prompts.
    A process, not a thread: it loads its own tokenizer and imports nothing beside the training's imports."""
    out = work / "prompts.pkl"
    out.unlink(missing_ok=True)
    order = {"tokenizer": str(tokenizer_dir), "out": str(out), **{k: spec[k] for k in GRID_KEYS}}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # tokenizing only: no GPU context beside the job's
    _PREBUILD.append((subprocess.Popen([sys.executable, __file__, "prompts", json.dumps(order)], env=env), out))


def _take_prebuilt() -> None:
    """Wait for `prebuild_grids`' process and add its prompts to _GRIDS (if it failed, `evaluate` builds them)."""
    while _PREBUILD:
        proc, out = _PREBUILD.pop()
        if proc.wait() == 0 and out.is_file():
            for task, grid in pickle.loads(out.read_bytes()).items():
                _GRIDS.setdefault(task, grid)
        out.unlink(missing_ok=True)


def build_prompts(order: dict) -> None:
    """`prompts ORDER` (internal): the prompts of ORDER's grid, pickled into ORDER['out'] (written whole or not at
    all)."""
    from transformers import AutoTokenizer

    _build_grids(AutoTokenizer.from_pretrained(order["tokenizer"]), order)
    out = Path(order["out"])
    part = out.with_suffix(".part")
    part.write_bytes(pickle.dumps(dict(_GRIDS)))
    part.replace(out)


def evaluate(model, tokenizer, spec: dict, *, prefill_chunk: int | None = None) -> dict:
    """NIAH exact match (%) per task and length on `model` as it is, through `slconvert eval`'s own code, with
    every prompt's generated answer. `prefill_chunk`: feed prompts in chunks of that many tokens (dense models:
    `dense_prefill_chunk`)."""
    import torch

    from slconvert.evaluation.models import EvalModel
    from slconvert.evaluation.niah_run import grid_table, run_grid

    _take_prebuilt()  # prompts built in the background, if any (what they lack is built here)
    _build_grids(tokenizer, spec)
    was_training = model.training
    model.eval()
    em = EvalModel(name=spec["name"], path=Path(spec.get("path", ".")), model=model, tokenizer=tokenizer,
                   converted=True, max_length=None)
    out = {}
    try:
        with torch.no_grad():
            for task in spec["tasks"]:
                grid = _GRIDS[task]
                records = run_grid(em, grid, mode="generate", label=spec["name"], prefill_chunk=prefill_chunk,
                                   batch=spec.get("eval_batch") or cell_prompts(spec))
                table = grid_table(grid, records)
                per_length = {}
                for col, length in enumerate(table["lengths"]):
                    cells = [row[col] for row in table["scores"] if row[col] is not None]
                    per_length[str(length)] = sum(cells) / len(cells) if cells else None
                # each prompt's answer next to the expected values, so a failure's kind can be read afterwards
                answers = [{k: r[k] for k in ("length", "depth", "sample", "expected", "needle_chars", "output", "score")}
                           for r in records]
                out[task] = {"average": table["average"], "by_length": per_length, "table": table["scores"],
                             "answers": answers}
    finally:
        model.train(was_training)
    return out


# ----- one job --------------------------------------------------------------------------------------------


def training_left(stop_by: float, now: float) -> float:
    """Seconds a job started at `now` can train before `stop_by`, once its setup (SETUP_S) is taken off."""
    return stop_by - now - SETUP_S


def job_time_limit(spec: dict, now: float | None = None) -> float:
    """The job's training time limit in minutes (0: none): its --job-minutes, shortened so that training stops by
    `stop_by` (the study's deadline less its --reserve, set by `run_jobs`) and the job still measures its model and
    writes the checkpoint that `run --resume` continues from, instead of being killed at the deadline."""
    limit = float(spec.get("job_minutes") or 0)
    if spec.get("stop_by"):
        left = max(training_left(spec["stop_by"], time.time() if now is None else now), MIN_TRAIN_S) / 60.0
        limit = min(limit, left) if limit else left
    return limit


def run_job(spec: dict) -> None:
    """Convert, train and evaluate one (shape, search key, preset) combination; rows go to spec['rows']."""
    _importable()
    from slkernels import SuperlinearConfig

    from slconvert.surgery import convert, plan_conversion
    from slconvert.training import Trainer, load_recipe, train

    rows = Path(spec["rows"])
    work = Path(spec["work"])
    resume = bool(spec.get("resume"))  # `run --resume`: continue from the checkpoint of a time-limited stop
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    base = {"job": spec["name"], "shape": spec["shape"], "search_key": spec["key"], "preset": spec["preset"]}
    started = time.perf_counter()

    def record(step: int, results: dict, tokens: int = 0, **extra) -> None:
        _append(rows, {**base, "step": step, "tokens": tokens, "results": results,
                       "elapsed_s": round(time.perf_counter() - started, 1), **extra})

    if spec["preset"] == "dense":  # the teacher itself
        from transformers import AutoTokenizer

        teacher, chunk = load_measured(Path(spec["teacher"]), spec)
        record(0, evaluate(teacher, AutoTokenizer.from_pretrained(spec["teacher"]), spec, prefill_chunk=chunk))
        return

    shape = SHAPES[spec["shape"]] if not spec.get("scale_to") else scaled(SHAPES[spec["shape"]], spec["scale_to"])
    params = SuperlinearConfig(**shape, search_key=spec["key"])
    base["window"] = params.window
    converted = work / "converted"
    if not resume:
        convert(plan_conversion(Path(spec["teacher"]), params), converted, progress=False)
    preset, _, stage = spec["preset"].partition("+")
    start = converted
    if stage == "warmup":
        if not resume:
            warm = load_recipe(ROOT / "recipes" / "router-warmup.yaml", WARMUP_OVERRIDES)
            train(warm, converted, work / "warmup", progress=False)
        start = work / "warmup"
    overrides = [f"trainable={preset}", f"max_steps={spec['steps']}", f"seq_len={spec['seq_len']}",
                 f"batch_size={spec['batch_size']}", f"micro_batch_size={spec['batch_size']}", f"lr={spec['lr']}",
                 f"seed={spec['seed']}", "save_every=1", f"time_limit_minutes={job_time_limit(spec)}",
                 *spec.get("train_overrides", [])]
    recipe = load_recipe(RECIPE, overrides)
    evals = sorted(set(spec["evals"]))

    class StudyTrainer(Trainer):
        """Measures the live model at each budget instead of writing checkpoints (a time-limited stop still writes
        the one that `run --resume` continues from)."""

        def save_checkpoint(self, step: int):
            if step in evals and step < spec["steps"]:
                record(step, evaluate(self.unwrapped, self.tokenizer, spec), recipe.tokens_before(step))

    prebuild_grids(converted, spec, work)
    trainer = StudyTrainer(recipe, start, work / "run", resume=resume, progress=False)
    if spec.get("untrained", True) and not resume:
        record(0, evaluate(trainer.unwrapped, trainer.tokenizer, spec), trainable_parameters=sum(
            p.numel() for p in trainer.params))
    summary = trainer.run()
    record(summary["steps"], evaluate(trainer.unwrapped, trainer.tokenizer, spec), recipe.tokens_before(summary["steps"]),
           tokens_per_s=summary["tokens_per_s_mean"], final_model=str(work / "run"),
           stopped_at_time_limit=summary["stopped_at_time_limit"])


def load_measured(model_dir: Path, spec: dict):
    """A model to measure, in float32 on the GPU when there is one, and the prefill chunk to measure it with: a
    dense checkpoint through transformers, its prompts in `dense_prefill_chunk`s; a converted one through
    `slconvert.load`, its prompts whole."""
    import torch
    from transformers import AutoModelForCausalLM

    from slconvert.loading import load, read_block

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if read_block(model_dir) is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        return model, dense_prefill_chunk(model, spec)
    return load(model_dir, device=device, dtype="float32"), None


def measure_answers(args) -> dict:
    """One model, dense or converted, on the study's NIAH prompts: scores and every answer (as a study row's
    `results`), and what the answers hold. It shows, for instance, the dense teacher's answer kinds where a study
    took the teacher's row from an older one that did not keep answers."""
    from transformers import AutoTokenizer

    model_dir = Path(args.model)
    spec = {"name": model_dir.name, "tasks": args.tasks, "lengths": args.lengths, "depths": args.depths,
            "samples": args.samples, "seed": args.seed}
    model, chunk = load_measured(model_dir, spec)
    results = evaluate(model, AutoTokenizer.from_pretrained(model_dir), spec, prefill_chunk=chunk)
    out = {"model": str(model_dir.resolve()), "fingerprint": fingerprint(model_dir), "device": str(model.device),
           **{k: spec[k] for k in ("tasks", "lengths", "depths", "samples", "seed")}, "results": results,
           "answer_kinds": row_answer_kinds({"results": results})}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for task, res in results.items():
        print(f"{task}: exact match % by length {res['by_length']}; answers {out['answer_kinds'].get(task)}")
    print(f"wrote {args.out}")
    return out


# ----- the study's teacher -------------------------------------------------------------------------------


def train_teacher(args) -> None:
    """Build the untrained study teacher, train it dense with recipes/study-teacher.yaml, measure its NIAH."""
    _importable()
    from slconvert.assets.teacher import build_untrained_teacher
    from slconvert.errors import SlconvertError
    from slconvert.training import train

    recipe = _recipe_or_exit(TEACHER_RECIPE, args.overrides)  # a bad override stops here, before the model is built
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.init:
        init = Path(args.init)
    elif args.resume and (out / "init" / "config.json").is_file():
        init = out / "init"
    else:
        init = build_untrained_teacher(out / "init", size=args.size, seed=args.seed)
    try:
        summary = train(recipe, init, out / "model", resume=args.resume, progress=False)
    except SlconvertError as err:  # e.g. --resume without a checkpoint, or a finished run's folder
        sys.exit(f"error: {err}")
    if summary["stopped_at_time_limit"]:  # measured once it is trained
        print(f"the time limit stopped the teacher at step {summary['steps']}; `teacher --out {out} --resume` with "
              "the same overrides continues it, then measures its NIAH")
        return
    spec = {"name": "teacher", "path": str(out / "model"), "tasks": args.tasks, "lengths": args.lengths,
            "depths": args.depths, "samples": args.samples, "seed": args.seed}
    rows = out / "rows.jsonl"
    rows.unlink(missing_ok=True)
    run_job({**spec, "teacher": str(out / "model"), "preset": "dense", "shape": "dense", "key": "-",
             "rows": str(rows), "work": str(out / "eval"), "batch_size": 0, "seq_len": 0})
    result = json.loads(rows.read_text().splitlines()[-1])
    teacher_report = {"card": _card(), "recipe": str(TEACHER_RECIPE.relative_to(ROOT)), "overrides": args.overrides,
                      "init": args.init, "size": args.size, "training": summary, "niah": result["results"]}
    (out / "teacher.json").write_text(json.dumps(teacher_report, indent=2, default=str) + "\n")
    for task, res in result["results"].items():
        print(f"teacher NIAH {task}: " + ", ".join(f"{k} tokens {v:.1f}%" for k, v in res["by_length"].items()
                                                      if v is not None))


# ----- probes of the teacher's recipe -------------------------------------------------------------------


def _recipe_or_exit(path: Path, overrides: list[str], what: str = ""):
    """The recipe at PATH with these overrides, or one `error:` line naming the bad one (before any model is
    built or job started)."""
    from slconvert.errors import SlconvertError
    from slconvert.training import load_recipe

    try:
        return load_recipe(path, overrides)
    except SlconvertError as err:
        sys.exit(f"error: {what}{err}")


def run_probes(args) -> None:
    """Short runs of recipes/study-teacher.yaml side by side from one initial model, one process each, spread over
    the GPUs, each with its own overrides and the same time limit: which setting starts to learn retrieval.
    Writes OUT/probes.json (settings, card, every probe's logged steps) and OUT/probes.png (smoothed loss)."""
    _importable()
    from slconvert.assets.teacher import build_untrained_teacher

    out = Path(args.out)
    probes = {}
    for item in args.probes:
        name, _, overrides = item.partition("=")
        if not name or not overrides or "/" in name:
            sys.exit(f"error: probe {item!r} is not NAME=KEY=VALUE[;KEY=VALUE...]; e.g. lr1e-3=lr=1e-3;batch_size=32")
        probes[name] = [o for o in overrides.split(";") if o]
        _recipe_or_exit(TEACHER_RECIPE, [*PROBE_BASE, *args.common, *probes[name]], f"probe {name}: ")
    out.mkdir(parents=True, exist_ok=True)
    init = Path(args.init) if args.init else build_untrained_teacher(out / "init", size=args.size, seed=args.seed)
    env = _child_env(args.threads)
    running = []
    for i, (name, overrides) in enumerate(probes.items()):
        shutil.rmtree(out / name, ignore_errors=True)
        command = [sys.executable, "-m", "slconvert.cli", "train", str(TEACHER_RECIPE), "--model", str(init),
                   "--output", str(out / name), "--quiet", *PROBE_BASE, *args.common, *overrides,
                   f"time_limit_minutes={args.minutes}"]
        job_env = {**env, "CUDA_VISIBLE_DEVICES": str(i % args.gpus)} if args.gpus > 1 else env
        log = open(out / f"{name}.log", "w")
        running.append((name, command, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=job_env),
                        log))
    print(f"probes: {len(running)} runs of {args.minutes} min on {args.gpus} GPU(s) from {init}", flush=True)
    results = {}
    for name, command, proc, log in running:
        proc.wait()
        log.close()
        metrics = out / name / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
        steps = [r for r in records if "loss" in r and r.get("event") is None]  # a NaN stop logs an event line
        results[name] = {"overrides": probes[name], "command": " ".join(command[1:]), "returncode": proc.returncode,
                         "steps": steps, "last": steps[-1] if steps else None,
                         "log_tail": None if proc.returncode == 0 else (out / f"{name}.log").read_text()[-2000:]}
        last = steps[-1] if steps else {}
        print(f"  {name}: exit {proc.returncode}, step {last.get('step')}, smoothed loss "
              f"{last.get('loss_smooth')}, answer loss {last.get('lm_niah')}", flush=True)
    probes_report = {"command": " ".join(sys.argv), "card": _card(), "recipe": str(TEACHER_RECIPE.relative_to(ROOT)),
                     "size": args.size, "seed": args.seed, "init": str(init), "minutes": args.minutes,
                     "common": args.common, "probes": results}
    (out / "probes.json").write_text(json.dumps(probes_report, indent=2, default=str) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    for name, res in results.items():
        if res["steps"]:
            axes[0].plot([r["step"] for r in res["steps"]], [r["loss_smooth"] for r in res["steps"]], label=name)
            answer = [(r["step"], r["lm_niah"]) for r in res["steps"] if "lm_niah" in r]
            if answer:
                axes[1].plot(*zip(*answer), label=name, alpha=0.8)
    axes[0].set_ylabel("smoothed training loss")
    axes[1].set_ylabel("answer loss of the needle samples (logged steps)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        if any(res["steps"] for res in results.values()):
            ax.legend(fontsize=8)
    fig.suptitle(f"study teacher probes ({args.size}, {args.minutes} min each, {probes_report['card']})", fontsize=10)
    fig.savefig(out / "probes.png", dpi=120)
    plt.close(fig)


# ----- the whole study --------------------------------------------------------------------------------


def _card() -> str:
    """The GPU the study ran on ("cpu" without one), as the benchmarks name it (slconvert.benchmark.host)."""
    try:
        import torch

        from slconvert.benchmark.host import device_name

        return device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - the card name is informative only
        return "unknown"


# Recipe keys each job sets from the study's own options (--train may not override them: the budgets and the rows'
# labels depend on them). A `curriculum` may come from --train: its stages take --batch-size where they set no batch
# of their own, its last stage runs to --steps, and the rows count each stage's own tokens.
STUDY_KEYS = {"trainable": "--presets", "max_steps": "--steps", "seq_len": "--seq-len",
              "batch_size": "--batch-size", "micro_batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
              "save_every": "--evals", "time_limit_minutes": "--job-minutes"}


# What a resumed study takes from the earlier one's settings.json (all of a job's spec but its name, place and limits).
RESUMED_KEYS = ("teacher", "teacher_fingerprint", "steps", "evals", "seq_len", "batch_size", "lr", "seed", "tasks",
                "lengths", "depths", "samples", "scale_to", "train_overrides", "eval_batch")


def check_train_overrides(overrides: list[str]) -> None:
    """Refuse, in one line and before any job starts, a --train override of a key the study sets or one that
    recipes/conversion-study.yaml does not accept."""
    _importable()
    for item in overrides:
        key = override_key(item)
        if key in STUDY_KEYS:
            sys.exit(f"error: --train cannot set {key!r}: the study sets it from {STUDY_KEYS[key]}")
    _recipe_or_exit(RECIPE, overrides, "--train: ")


def fingerprint(model: Path) -> str:
    """A short hash of a checkpoint's config and weight files (names, sizes, first MiB), so that a study can tell
    whether an earlier study measured the same teacher wherever its folder now lies."""
    digest = hashlib.sha256()
    for path in sorted(model.glob("*.json")) + sorted(model.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}:".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def reused_teacher_row(run: Path, common: dict) -> dict:
    """The dense teacher's row of the earlier study in `run`, marked as reused; exits with one line when `run` has
    none, or measured other prompts or another teacher (by the fingerprint of its files where that study recorded
    one, else by the teacher's folder name)."""
    try:
        earlier = json.loads((run / "settings.json").read_text())
        rows = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        sys.exit(f"error: --teacher-row {run}: cannot read its settings.json and rows.jsonl ({err}); "
                 "give the folder of an earlier `conversion_study.py run`")
    teacher_rows = [r for r in rows if r.get("preset") == "dense" and "results" in r]
    if not teacher_rows:
        sys.exit(f"error: --teacher-row {run}: that study has no measured teacher row; run without --teacher-row")
    differ = [k for k in TEACHER_ROW_KEYS if earlier.get(k) != common[k]]
    if earlier.get("teacher_fingerprint"):
        same_teacher = earlier["teacher_fingerprint"] == common["teacher_fingerprint"]
    else:
        same_teacher = Path(earlier.get("teacher", "")).name == Path(common["teacher"]).name
    if not same_teacher:
        differ.append("teacher")
    if differ:
        sys.exit(f"error: --teacher-row {run}: it measured other {', '.join(differ)} "
                 f"({'; '.join(f'{k}: {earlier.get(k)}' for k in differ)}); measure the teacher again instead")
    return {**teacher_rows[-1], "reused_from": str(run.resolve())}


def run_study(args) -> None:
    check_train_overrides(args.train)
    out = Path(args.out)
    work = Path(args.work or (out / "jobs"))
    rows = out / "rows.jsonl"
    common = {"teacher": str(Path(args.teacher).resolve()), "teacher_fingerprint": fingerprint(Path(args.teacher)),
              "steps": args.steps, "evals": args.evals,
              "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "tasks": args.tasks, "lengths": args.lengths, "depths": args.depths, "samples": args.samples,
              "scale_to": args.scale_to, "job_minutes": args.job_minutes, "train_overrides": args.train,
              "untrained": not args.no_untrained, "eval_batch": args.eval_batch or cell_prompts(vars(args)),
              "rows": str(rows.resolve())}
    reused = reused_teacher_row(Path(args.teacher_row), common) if args.teacher_row else None  # before any write
    out.mkdir(parents=True, exist_ok=True)
    if rows.exists() and not args.append:
        rows.unlink()
    jobs = [] if reused else [{**common, "name": "teacher", "shape": "dense", "key": "-", "preset": "dense",
                               "work": str(work / "teacher")}]
    for shape in args.shapes:
        for key in args.keys:
            for preset in args.presets:
                name = f"{shape}-{key}-{preset}"
                jobs.append({**common, "name": name, "shape": shape, "key": key, "preset": preset,
                             "work": str(work / name)})
    settings = {"command": " ".join(sys.argv), "card": _card(), "recipe": str(RECIPE.relative_to(ROOT)),
                "shapes": {s: SHAPES[s] if not args.scale_to else scaled(SHAPES[s], args.scale_to) for s in args.shapes},
                **{k: v for k, v in common.items() if k != "rows"},
                "gpus": args.gpus, "parallel": args.parallel, "jobs": [j["name"] for j in jobs],
                **({"teacher_row_from": str(Path(args.teacher_row).resolve())} if reused else {})}
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    if reused:
        _append(rows, reused)
    print(f"study: {len(jobs)} jobs, {args.parallel} at a time on {args.gpus} GPU(s), on {settings['card']}; "
          f"rows -> {rows}", flush=True)
    run_jobs(jobs, rows, work, args)
    report(out)


def resume_study(args) -> None:
    """`run --out OUT --resume`: continue each job of the study in OUT that stopped at its time limit, from the
    checkpoint it wrote then, with the study's own settings (only --job-minutes, --deadline, --parallel, --gpus and
    --threads are taken from this command); rows are appended and the report is rebuilt over all of them."""
    from slconvert.training.checkpoints import latest_checkpoint

    out = Path(args.out)
    rows, earlier = out / "rows.jsonl", out / "settings.json"
    if not (rows.is_file() and earlier.is_file()):
        sys.exit(f"error: --resume: {out} holds no earlier study (settings.json and rows.jsonl); run it without "
                 "--resume first")
    settings = json.loads(earlier.read_text())
    work = Path(args.work or (out / "jobs"))
    common = {key: settings[key] for key in RESUMED_KEYS if key in settings}
    common.update(rows=str(rows.resolve()), resume=True, untrained=False,
                  job_minutes=args.job_minutes or settings.get("job_minutes", 0))
    last: dict[str, dict] = {}
    for line in rows.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("preset") not in (None, "dense") and "results" in row:
            last[row["job"]] = row
    jobs = []
    for name, row in sorted(last.items()):
        if not row.get("stopped_at_time_limit"):
            print(f"  {name}: finished at step {row['step']}, nothing to resume", flush=True)
        elif latest_checkpoint(work / name / "run") is None:
            print(f"  {name}: no checkpoint under {work / name / 'run'}, cannot resume", flush=True)
        else:
            jobs.append({**common, "name": name, "shape": row["shape"], "key": row["search_key"],
                         "preset": row["preset"], "work": str(work / name)})
    if not jobs:
        sys.exit(f"error: --resume: no job of {out} stopped at its time limit with a checkpoint to continue from")
    settings.setdefault("resumed", []).append({"command": " ".join(sys.argv), "jobs": [j["name"] for j in jobs],
                                               "job_minutes": common["job_minutes"]})
    earlier.write_text(json.dumps(settings, indent=2) + "\n")
    print(f"study: resuming {len(jobs)} jobs, {args.parallel} at a time on {args.gpus} GPU(s); rows -> {rows}",
          flush=True)
    run_jobs(jobs, rows, work, args)
    report(out)


def run_jobs(jobs: list[dict], rows: Path, work: Path, args) -> None:
    """Run the jobs as processes, `args.parallel` at a time over `args.gpus` GPUs, until done or `args.deadline`;
    a failed or stopped job leaves a row saying so."""
    deadline = time.time() + args.deadline if args.deadline else None
    stop_by = deadline - args.reserve if deadline else None
    env = _child_env(args.threads)
    running: list[tuple[dict, subprocess.Popen, object, int]] = []
    pending = list(jobs)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < args.parallel:
            trains = pending[0]["preset"] != "dense"  # the teacher's row only measures
            if trains and stop_by and training_left(stop_by, time.time()) < MIN_TRAIN_S:
                break  # too late to train and still measure: the rest are not started
            job = {**pending.pop(0), "stop_by": stop_by}
            log = open(logs / f"{job['name']}.log", "a" if job.get("resume") else "w")
            # Each job goes to the GPU that runs the fewest jobs now (jobs are independent processes).
            gpu = min(range(args.gpus), key=lambda g: sum(1 for *_, used in running if used == g))
            job_env = {**env, "CUDA_VISIBLE_DEVICES": str(gpu)} if args.gpus > 1 else env
            proc = subprocess.Popen([sys.executable, __file__, "job", json.dumps(job)], stdout=log,
                                    stderr=subprocess.STDOUT, env=job_env)
            running.append((job, proc, log, gpu))
        if pending and not running:  # none could start
            _not_started(rows, pending)
            break
        time.sleep(2)
        for item in list(running):
            job, proc, log, _ = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"  {job['name']}: exit {proc.returncode}", flush=True)
                if proc.returncode:
                    _append(rows, _failed_row(job, returncode=proc.returncode,
                                              log_tail=(logs / f"{job['name']}.log").read_text()[-2000:]))
        if deadline and time.time() >= deadline:
            for job, proc, log, _ in running:
                proc.kill()
                log.close()
                _append(rows, _failed_row(job, reason="stopped at the study's deadline"))
                print(f"  {job['name']}: stopped at the deadline", flush=True)
            _not_started(rows, pending)
            break


def _failed_row(job: dict, **why) -> dict:
    """The row of a job that failed, was stopped or never started, with why (`reason` or `returncode`)."""
    return {"job": job["name"], "shape": job["shape"], "search_key": job["key"], "preset": job["preset"],
            "failed": True, **why}


def _not_started(rows: Path, jobs: list[dict]) -> None:
    for job in jobs:
        _append(rows, _failed_row(job, reason="not started before the deadline"))


def _numbers(text: str, kind=int) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def _grid_options(parser, *, lengths: list[int], samples: int) -> None:
    """The NIAH prompt grid's options (tasks, lengths, depths, samples per cell) of a subcommand."""
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=["single", "multikey", "multivalue"])
    parser.add_argument("--lengths", type=_numbers, default=lengths)
    parser.add_argument("--depths", type=lambda s: _numbers(s, float), default=[0.0, 25.0, 50.0, 75.0, 100.0])
    parser.add_argument("--samples", type=int, default=samples)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study (GPU) and write the report")
    run.add_argument("--out", required=True)
    run.add_argument("--teacher", default=str(ROOT / "slconvert" / "assets" / "tiny-teacher"))
    run.add_argument("--shapes", type=lambda s: s.split(","), default=["balanced", "released"])
    run.add_argument("--keys", type=lambda s: s.split(","), default=["anchor", "span_mean"])
    run.add_argument("--presets", type=lambda s: s.split(","), default=["attention", "mixers", "all"])
    run.add_argument("--steps", type=int, default=1000)
    run.add_argument("--evals", type=_numbers, default=[125, 250, 500])
    run.add_argument("--seq-len", type=int, default=1024)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--lr", type=float, default=1e-3)
    run.add_argument("--seed", type=int, default=0)
    _grid_options(run, lengths=[512, 1024], samples=4)
    run.add_argument("--parallel", type=int, default=8)
    run.add_argument("--threads", type=int, default=1, help="CPU threads per job")
    run.add_argument("--gpus", type=int, default=1, help="spread the jobs over this many GPUs (CUDA_VISIBLE_DEVICES)")
    run.add_argument("--deadline", type=float, default=0, help="seconds after which running jobs are stopped")
    run.add_argument("--reserve", type=float, default=150,
                     help="with --deadline: seconds before it at which each job stops training (its time limit is "
                          "shortened), so it measures its model and leaves a checkpoint to --resume from")
    run.add_argument("--job-minutes", type=float, default=0,
                     help="each job's training time limit: it then stops, and its model as trained is measured")
    run.add_argument("--work", default=None, help="folder of the jobs' models (default OUT/jobs)")
    run.add_argument("--append", action="store_true", help="keep the rows of an earlier run in OUT")
    run.add_argument("--resume", action="store_true",
                     help="continue the jobs of the study in OUT that stopped at their time limit (--job-minutes), "
                          "with its settings; --job-minutes, --deadline, --parallel, --gpus apply to this run")
    run.add_argument("--train", type=lambda s: [o for o in s.split(";") if o], default=[],
                     help="overrides of recipes/conversion-study.yaml every job takes after the study's own, "
                          "';'-separated (e.g. 'data.niah_tasks=[single, multikey, multivalue];lm_average=sample')")
    run.add_argument("--teacher-row", default=None, metavar="RUN",
                     help="take the dense teacher's row from an earlier study folder RUN (same teacher, tasks, "
                          "lengths, depths and samples) instead of measuring it again")
    run.add_argument("--eval-batch", type=int, default=0,
                     help="NIAH prompts of one length decoded side by side (default: one cell's, depths x samples)")
    run.add_argument("--no-untrained", action="store_true",
                     help="skip the step-0 measurement of each converted model (as converted: the router is "
                          "untrained); its curve then starts at the first budget")
    run.add_argument("--scale-to", type=int, default=0,
                     help="choose each shape's sw so that W <= LENGTH / 16 (default: the shapes as listed)")
    teach = sub.add_parser("teacher", help="train the study's dense teacher (GPU) and measure its NIAH")
    teach.add_argument("--out", required=True)
    teach.add_argument("--size", default="study")
    teach.add_argument("--seed", type=int, default=0)
    teach.add_argument("--init", default=None, help="continue from this checkpoint instead of a fresh --size model")
    teach.add_argument("--resume", action="store_true",
                       help="continue the training in OUT/model from its last checkpoint (a run a time limit cut)")
    _grid_options(teach, lengths=[2048, 4096, 8192, 16384], samples=4)
    teach.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of recipes/study-teacher.yaml")
    probe = sub.add_parser("probes", help="short runs of the teacher's recipe side by side (GPU), one per setting")
    probe.add_argument("--out", required=True)
    probe.add_argument("--size", default="study")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--init", default=None, help="start every probe from this checkpoint (default: a fresh --size model)")
    probe.add_argument("--minutes", type=float, default=4.0, help="each probe's training time limit")
    probe.add_argument("--gpus", type=int, default=1, help="spread the probes over this many GPUs")
    probe.add_argument("--threads", type=int, default=1, help="CPU threads per probe")
    probe.add_argument("--common", type=lambda s: [o for o in s.split(";") if o], default=[],
                       help="overrides every probe takes, ';'-separated (e.g. 'curriculum=[{seq_len: 256, steps: 3000}];max_steps=3000')")
    probe.add_argument("probes", nargs="+", help="NAME=KEY=VALUE[;KEY=VALUE...], one per probe")
    job = sub.add_parser("job", help="(internal) one job, from its JSON spec")
    job.add_argument("spec")
    prompts = sub.add_parser("prompts", help="(internal) a job's NIAH prompts, built ahead, from a JSON order")
    prompts.add_argument("order")
    rep = sub.add_parser("report", help="rebuild study.json / .md / .png from OUT/rows.jsonl")
    rep.add_argument("out")
    comb = sub.add_parser("combine", help="one report over several studies of one teacher: OUT FOLDER=LABEL ...")
    comb.add_argument("out")
    comb.add_argument("runs", nargs="+", metavar="FOLDER=LABEL")
    comb.add_argument("--teacher-niah", default=None, metavar="TEACHER_JSON",
                      help="the dense teacher's row from the teacher.json of `conversion_study.py teacher` (the cells "
                           "it measured, on the same prompts) instead of the studies' own teacher row")
    ans = sub.add_parser("answers", help="one model (dense or converted) on the study's NIAH prompts, with its answers")
    ans.add_argument("model")
    ans.add_argument("--out", required=True, help="JSON file to write")
    _grid_options(ans, lengths=[2048, 4096, 8192, 16384], samples=2)
    ans.add_argument("--seed", type=int, default=0)
    cmp_ = sub.add_parser("compare", help="files of `answers` against the dense teacher's: every cell's ratio")
    cmp_.add_argument("teacher", help="the dense teacher's `answers` file")
    cmp_.add_argument("models", nargs="+", help="the `answers` files of the models to compare")
    cmp_.add_argument("--out", default=None, help="JSON file to write")
    best = sub.add_parser("best", help="print the folder of the final model of the best job (by final score)")
    best.add_argument("out")
    best.add_argument("--shape", default=None)
    args = parser.parse_args(argv)
    if args.command == "job":
        spec = json.loads(args.spec)
        try:
            run_job(spec)
        except Exception:
            traceback.print_exc()
            sys.exit(1)
    elif args.command == "prompts":
        build_prompts(json.loads(args.order))
    elif args.command == "report":
        report(args.out)
    elif args.command == "combine":
        combine(args.out, args.runs, args.teacher_niah)
    elif args.command == "teacher":
        train_teacher(args)
    elif args.command == "probes":
        run_probes(args)
    elif args.command == "answers":
        measure_answers(args)
    elif args.command == "compare":
        compare(args.teacher, args.models, args.out)
    elif args.command == "best":
        try:
            rows = [json.loads(line) for line in (Path(args.out) / "rows.jsonl").read_text().splitlines() if line]
        except OSError as err:
            sys.exit(f"error: best: {err}; give the folder of a `conversion_study.py run`")
        finals = [r for r in rows if r.get("final_model") and (args.shape is None or r["shape"] == args.shape)]
        if not finals:
            sys.exit("error: no finished job" + (f" of shape {args.shape}" if args.shape else ""))
        print(max(finals, key=lambda r: row_score(r) or 0.0)["final_model"])
    elif args.resume:
        resume_study(args)
    else:
        for shape in args.shapes:
            if shape not in SHAPES:
                sys.exit(f"error: unknown shape {shape!r}; use {', '.join(SHAPES)}")
        for preset in args.presets:
            if preset.partition("+")[0] not in PRESETS or preset.partition("+")[2] not in ("", "warmup"):
                sys.exit(f"error: unknown preset {preset!r}; use {', '.join(PRESETS)}, optionally with +warmup")
        run_study(args)


if __name__ == "__main__":
    main()
