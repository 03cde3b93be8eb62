"""scripts/conversion_study.py without a GPU: shape scaling, and the report's arithmetic on rows whose
answers are known (a teacher that answers one task, a job that reaches it, a job that failed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from module_file import load_module
from slkernels import SuperlinearConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    return load_module(ROOT / "scripts" / "conversion_study.py")


@pytest.fixture(scope="module")
def reports():
    return load_module(ROOT / "scripts" / "study_report.py")


@pytest.mark.parametrize("shortest", [512, 2048, 16384])
def test_scaled_shapes_take_the_largest_window_under_a_sixteenth(study, shortest):
    for shape in study.SHAPES.values():
        scaled = study.scaled(shape, shortest)
        assert SuperlinearConfig(**scaled).window <= shortest // 16
        assert SuperlinearConfig(**{**scaled, "sw_index": scaled["sw_index"] + 1}).window > shortest // 16
        assert {k: v for k, v in scaled.items() if k != "sw_index"} == {
            k: v for k, v in shape.items() if k != "sw_index"}


def test_dense_prefill_chunk_holds_the_float32_scores_of_a_cell_under_the_bound(study):
    """The study teacher's cell at 16K (10 prompts, 8 heads) would need 80 GiB of scores whole; in 512-token
    chunks it needs 2.5 GiB. Short prompts go in whole chunks of at least 256 tokens."""
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(num_attention_heads=8))
    spec = {"lengths": [2048, 16384], "depths": [0, 25, 50, 75, 100], "samples": 2}
    for lengths, want in (([2048, 16384], 512), ([2048], 4096), ([1 << 20], 256)):
        chunk = study.dense_prefill_chunk(model, {**spec, "lengths": lengths})
        assert chunk == want
        assert chunk == 256 or 10 * 8 * max(lengths) * chunk * 4 <= study.DENSE_SCORE_BYTES < 20 * 8 * max(lengths) * chunk * 4


def _row(job, step, single, multikey, **extra):
    return {"job": job, "shape": "balanced", "search_key": "span_mean", "preset": job, "tokens_per_step": 1000,
            "window": 15, "step": step, "tokens": step * 1000,
            "results": {"single": {"average": sum(single) / 2, "by_length": {"512": single[0], "1024": single[1]}},
                        "multikey": {"average": multikey, "by_length": {"512": multikey, "1024": multikey}}},
            **extra}


def test_report_scores_the_cells_the_teacher_answers(reports, tmp_path):
    settings = {"command": "x", "card": "test card", "recipe": "recipes/conversion-study.yaml", "teacher": "t",
                "batch_size": 1, "seq_len": 1000, "lr": 1e-3, "seed": 0, "tasks": ["single", "multikey"],
                "lengths": [512, 1024], "depths": [50.0], "samples": 1}
    rows = [
        {**_row("teacher", 0, (100.0, 80.0), 0.0), "preset": "dense", "shape": "dense", "search_key": "-"},
        _row("mixers", 0, (0.0, 0.0), 0.0),
        _row("mixers", 10, (96.0, 70.0), 50.0),
        _row("mixers", 20, (100.0, 78.0), 0.0, final_model="m"),
        _row("attention", 0, (0.0, 0.0), 0.0),
        {"job": "lora", "shape": "balanced", "search_key": "span_mean", "preset": "lora", "failed": True,
         "reason": "stopped at the study's deadline"},
    ]
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = reports.report(tmp_path)
    assert result["teacher"]["score"] == 90.0  # multikey (0 for the teacher) does not count
    jobs = {job["job"]: job for job in result["jobs"]}
    mixers = jobs["mixers"]
    assert mixers["curve"] == [(0, 0.0), (10000, 83.0), (20000, 89.0)]
    assert mixers["final_vs_teacher_min_ratio"] == pytest.approx(78.0 / 80.0)
    assert mixers["final_worst_cell"] == {"task": "single", "length": 1024, "score": 78.0, "teacher": 80.0,
                                          "ratio": pytest.approx(78.0 / 80.0)}
    assert mixers["tokens_to_95pct_of_teacher"] == 20000 and mixers["completed"]
    assert jobs["attention"]["tokens_to_95pct_of_teacher"] is None and not jobs["attention"]["completed"]
    assert [row["job"] for row in result["failed"]] == ["lora"]
    text = (tmp_path / "study.md").read_text()
    assert "test card" in text and "failed: stopped at the study's deadline" in text and "20000" not in text
    assert "holds 1 prompts, so one answer moves it by 100 points" in text
    assert "| 0.97 (single 1024: 0.78 vs 0.8 of 1) |" in text  # the worst cell and the prompts it stands for
    # per length, the mean over the tasks the teacher answers there (single only): 100 vs 100 at 512, 78 vs 80
    assert [(c["length"], c["ratio"]) for c in reports._length_ratios(rows[3], rows[0])] == [
        (512, 1.0), (1024, pytest.approx(78.0 / 80.0))]
    assert mixers["final_worst_length"]["length"] == 1024 and "| 0.97 (1024: 78.0 vs 80.0) |" in text
    assert (tmp_path / "study.png").stat().st_size > 10_000
    by_task = reports.task_curves(result)
    assert by_task["single"]["teacher"] == [(0, 90.0)] and by_task["multikey"]["teacher"] == [(0, 0.0)]
    assert by_task["single"]["mixers"] == [(0, 0.0), (10000, 83.0), (20000, 89.0)]
    assert by_task["multikey"]["mixers"] == [(0, 0.0), (10000, 50.0), (20000, 0.0)]
    assert (tmp_path / "study-tasks.png").stat().st_size > 10_000



def test_length_ratio_averages_the_tasks_the_teacher_answers_at_that_length(reports):
    """Run 9's midpoint against its teacher: per length the mean over single, multikey and multivalue; a task the
    teacher answers nowhere at a length (0) is left out there, as in the headline score."""
    def row(by_task):
        return {"results": {t: {"by_length": dict(zip(["2048", "4096", "8192", "16384"], v))}
                            for t, v in by_task.items()}}

    teacher = row({"single": [100, 100, 100, 100], "multikey": [10, 40, 20, 0], "multivalue": [85, 72.5, 72.5, 82.5]})
    model = row({"single": [100, 90, 90, 100], "multikey": [20, 20, 50, 10], "multivalue": [72.5, 62.5, 67.5, 62.5]})
    got = {c["length"]: (round(c["score"], 2), round(c["teacher"], 2)) for c in reports._length_ratios(model, teacher)}
    assert got == {2048: (64.17, 65.0), 4096: (57.5, 70.83), 8192: (69.17, 64.17), 16384: (81.25, 91.25)}
    worst = reports._worst_length(model, teacher)
    assert worst["length"] == 4096 and reports._length_note(worst) == "0.81 (4096: 57.5 vs 70.8)"
    assert reports._worst_cell(model, teacher)["ratio"] == 0.5  # the strict view: multikey 4096, 20 vs 40


def test_report_of_a_teacher_that_answers_nothing_keeps_every_row(reports, tmp_path):
    """A teacher that retrieves nothing (a failed teacher run) has no headline score; the report still lists
    the jobs' rows and draws its plots."""
    settings = {"command": "x", "card": "test card", "recipe": "recipes/conversion-study.yaml", "teacher": "t",
                "batch_size": 1, "seq_len": 1000, "lr": 1e-3, "seed": 0, "tasks": ["single", "multikey"],
                "lengths": [512, 1024], "depths": [50.0], "samples": 1}
    rows = [{**_row("teacher", 0, (0.0, 0.0), 0.0), "preset": "dense", "shape": "dense", "search_key": "-"},
            _row("mixers", 10, (50.0, 0.0), 0.0, final_model="m")]
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = reports.report(tmp_path)
    assert result["teacher"]["score"] is None
    assert [job["job"] for job in result["jobs"]] == ["mixers"] and result["jobs"][0]["final"] is None
    assert (tmp_path / "study.png").stat().st_size > 10_000 and (tmp_path / "study.md").exists()

def _study_folder(folder: Path, settings: dict, rows: list[dict]) -> str:
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_combine_takes_the_teacher_row_from_the_teacher_run_on_the_same_prompts(reports, tmp_path):
    """Studies whose own teacher row failed take the NIAH of `conversion_study.py teacher`: only the cells it
    measured are compared, the failed row stays listed, and a teacher.json of other prompts is refused."""
    settings = {"card": "test card", "recipe": "recipes/conversion-study.yaml", "teacher": "t",
                "teacher_fingerprint": "f", "batch_size": 1, "seq_len": 1000, "lr": 1e-3, "seed": 0,
                "tasks": ["single", "multikey"], "lengths": [512, 1024], "depths": [50.0], "samples": 1}

    def answers(length, value):
        return [{"length": length, "depth": 50.0, "sample": 0, "expected": [value], "output": "", "score": 0.0}]

    job = _row("mixers", 10, (100.0, 40.0), 0.0, final_model="m")
    job["results"]["single"]["answers"] = answers(512, "123") + answers(1024, "456")
    failed = {"job": "teacher", "shape": "dense", "search_key": "-", "preset": "dense", "failed": True,
              "returncode": 1}
    a = _study_folder(tmp_path / "a", settings, [failed, job])
    teacher_json = tmp_path / "teacher.json"
    teacher_json.write_text(json.dumps({"niah": {"single": {"average": 80.0, "by_length": {"512": 80.0},
                                                            "answers": answers(512, "123")}}}))
    result = reports.combine(tmp_path / "c", [f"{a}=one"], str(teacher_json))
    assert result["jobs"][0]["final_vs_teacher_min_ratio"] == 1.25  # 100 / 80 at 512, the one cell it measured
    assert result["teacher"]["measured_by"] == str(teacher_json)
    assert [r["preset"] for r in result["failed"]] == ["dense"]
    assert "measured by the teacher's training run" in (tmp_path / "c" / "study.md").read_text()
    teacher_json.write_text(json.dumps({"niah": {"single": {"by_length": {"512": 80.0},
                                                            "answers": answers(512, "999")}}}))
    with pytest.raises(SystemExit, match="measured other prompts"):
        reports.combine(tmp_path / "d", [f"{a}=one"], str(teacher_json))
    teacher_json.write_text(json.dumps({"niah": {"single": {"by_length": {"4096": 80.0},
                                                            "answers": answers(4096, "123")}}}))
    with pytest.raises(SystemExit, match="none of the studies' prompts"):
        reports.combine(tmp_path / "e", [f"{a}=one"], str(teacher_json))


def test_combine_reports_several_studies_of_one_teacher_under_their_labels(reports, tmp_path):
    settings = {"card": "test card", "recipe": "recipes/conversion-study.yaml", "teacher": "t",
                "teacher_fingerprint": "f", "batch_size": 1, "seq_len": 1000, "lr": 1e-3, "seed": 0,
                "tasks": ["single", "multikey"], "lengths": [512, 1024], "depths": [50.0], "samples": 1}
    teacher = {**_row("teacher", 0, (100.0, 80.0), 0.0), "preset": "dense", "shape": "dense", "search_key": "-"}
    a = _study_folder(tmp_path / "a", {**settings, "train_overrides": ["lr=1"], "command": "run a"},
                      [teacher, _row("mixers", 10, (100.0, 80.0), 0.0, final_model="m")])
    b = _study_folder(tmp_path / "b", {**settings, "train_overrides": ["lr=2"], "command": "run b"},
                      [_row("mixers", 10, (50.0, 40.0), 0.0, final_model="m")])
    result = reports.combine(tmp_path / "both", [f"{a}=one", f"{b}=two"])
    finals = {job["job"]: job["final"] for job in result["jobs"]}
    assert finals == {"mixers [one]": 90.0, "mixers [two]": 45.0}  # each scored against a's teacher row
    text = (tmp_path / "both" / "study.md").read_text()
    assert "| mixers [one] |" in text and "| mixers [two] |" in text
    assert "[one]: " + a + "; training overrides: lr=1." in text and "[two]: " + b + "; training overrides: lr=2." in text
    assert "training overrides: lr=1;" not in text  # no study's overrides stand for the others'
    assert (tmp_path / "both" / "study.png").stat().st_size > 10_000
    other = _study_folder(tmp_path / "c", {**settings, "lengths": [2048]}, [teacher])
    with pytest.raises(SystemExit, match="measured other lengths than"):
        reports.combine(tmp_path / "no", [f"{a}=one", f"{other}=three"])
    with pytest.raises(SystemExit, match="is not FOLDER=LABEL"):
        reports.combine(tmp_path / "no", [a])
    assert not (tmp_path / "no").exists()


@pytest.mark.slow  # about 30 s in CI (two training runs); `make test-slow`
def test_teacher_probes_run_side_by_side_and_plot(study, tmp_path):
    """Two probes of the teacher's recipe from one tiny initial model: each takes its own overrides, every row
    of its log is kept, the plot is drawn; a malformed probe is refused in one line."""
    out = tmp_path / "probes"
    study.main(["probes", "--out", str(out), "--size", "tiny", "--minutes", "5",
                "--common", "curriculum=[{seq_len: 128, steps: 3, niah_tasks: [single]}];max_steps=3;log_every=1;warmup_steps=1",
                "a=lr=1e-3", "b=lr=1e-4;batch_size=4;micro_batch_size=4"])
    report = json.loads((out / "probes.json").read_text())
    assert set(report["probes"]) == {"a", "b"} and report["size"] == "tiny"
    for name, lr in (("a", 1e-3), ("b", 1e-4)):
        probe = report["probes"][name]
        assert probe["returncode"] == 0, probe["log_tail"]
        assert [r["step"] for r in probe["steps"]] == [1, 2, 3]
        assert json.loads((out / name / "training_summary.json").read_text())["steps"] == 3
        assert yaml.safe_load((out / name / "recipe.yaml").read_text())["lr"] == lr  # its own overrides ran
    assert report["probes"]["b"]["steps"][-1]["tokens"] == 4 * 128
    assert (out / "probes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="is not NAME=KEY=VALUE"):
        study.main(["probes", "--out", str(out), "--size", "tiny", "broken"])


@pytest.mark.slow  # about 55 s in CI (a study job: conversion, training, two measurements); `make test-slow`
def test_a_study_job_converts_trains_with_the_study_overrides_and_measures(study, tmp_path):
    """One real job on the shipped tiny teacher (CPU): the rows hold the teacher and the job at steps 0 and 2, and
    the job trained with the overrides passed by --train after the study's own."""
    out = tmp_path / "s"
    study.main(["run", "--out", str(out), "--shapes", "balanced", "--keys", "anchor", "--presets", "attention",
                "--steps", "2", "--evals", "2", "--seq-len", "256", "--batch-size", "2", "--lengths", "256",
                "--depths", "50", "--samples", "1", "--tasks", "single", "--parallel", "1",
                "--train", "lm_average=sample;data.niah_tasks=[single, multikey]"])
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r.get("failed")], rows
    assert sorted((r["job"], r["step"]) for r in rows) == [("balanced-anchor-attention", 0),
                                                           ("balanced-anchor-attention", 2), ("teacher", 0)]
    assert {r["step"]: r["tokens"] for r in rows} == {0: 0, 2: 2 * 2 * 256}
    trained = yaml.safe_load((out / "jobs" / "balanced-anchor-attention" / "run" / "recipe.yaml").read_text())
    assert trained["lm_average"] == "sample" and trained["data"]["niah_tasks"] == ["single", "multikey"]
    assert trained["trainable"] == "attention" and trained["max_steps"] == 2
    assert "training overrides: lm_average=sample" in (out / "study.md").read_text()
    teacher = next(r for r in rows if r["job"] == "teacher")["results"]["single"]
    assert len(teacher["answers"]) == 1  # one prompt: its answer is kept with what was expected
    answer = teacher["answers"][0]
    assert answer["length"] == 256 and answer["depth"] == 50 and len(answer["expected"]) == 1
    assert answer["score"] == (1.0 if answer["expected"][0] in answer["output"] else 0.0)

    # `answers` measures one model on the same prompts: the dense teacher gives its row's answers again, and a
    # converted checkpoint (the job's final model) loads through slconvert
    teacher_dir = ROOT / "slconvert" / "assets" / "tiny-teacher"
    prompts = ["--tasks", "single", "--lengths", "256", "--depths", "50", "--samples", "1"]
    study.main(["answers", str(teacher_dir), "--out", str(tmp_path / "t.json"), *prompts])
    again_teacher = json.loads((tmp_path / "t.json").read_text())
    assert again_teacher["results"]["single"] == teacher
    assert again_teacher["answer_kinds"]["single"]["prompts"] == 1
    study.main(["answers", str(out / "jobs" / "balanced-anchor-attention" / "run"), "--out", str(tmp_path / "c.json"),
                *prompts])
    assert len(json.loads((tmp_path / "c.json").read_text())["results"]["single"]["answers"]) == 1
    # `compare` puts the two side by side, cell by cell, and refuses files of another grid
    study.main(["compare", str(tmp_path / "t.json"), str(tmp_path / "c.json"), "--out", str(tmp_path / "cmp.json")])
    compared = json.loads((tmp_path / "cmp.json").read_text())["models"][0]
    converted_score = json.loads((tmp_path / "c.json").read_text())["results"]["single"]["by_length"]["256"]
    assert again_teacher["results"]["single"]["by_length"]["256"] == 100.0  # the tiny teacher finds its needle
    assert compared["by_task"]["single"] == {"256": converted_score}
    assert compared["ratios"]["single"]["256"] == converted_score / 100.0
    assert compared["worst_cell"]["task"] == "single" and compared["worst_cell"]["length"] == 256
    other = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**other, "samples": 2}))
    with pytest.raises(SystemExit, match="measured other samples"):
        study.main(["compare", str(tmp_path / "t.json"), str(tmp_path / "other.json")])

    # a second study on the same teacher and prompts takes the teacher's row from the first, and skips the
    # as-converted measurement: only the job's trained budget is measured
    again = tmp_path / "again"
    study.main(["run", "--out", str(again), "--shapes", "balanced", "--keys", "anchor", "--presets", "attention",
                "--steps", "1", "--evals", "1", "--seq-len", "256", "--batch-size", "2", "--lengths", "256",
                "--depths", "50", "--samples", "1", "--tasks", "single", "--parallel", "1",
                "--teacher-row", str(out), "--no-untrained", "--train", "curriculum=[{seq_len: 256, steps: 1, batch_size: 4}]"])
    rows2 = [json.loads(line) for line in (again / "rows.jsonl").read_text().splitlines()]
    assert sorted((r["job"], r["step"]) for r in rows2) == [("balanced-anchor-attention", 1), ("teacher", 0)]
    # a curriculum stage's own batch counts in the job's token budget: 4 x 256, not the study's 2 x 256
    assert "2 x 256 tokens per step (the curriculum of the training overrides" in (again / "study.md").read_text()
    assert next(r for r in rows2 if r["job"] != "teacher")["tokens"] == 4 * 256
    reused = next(r for r in rows2 if r["job"] == "teacher")
    assert reused["reused_from"] == str(out.resolve())
    assert reused["results"] == next(r for r in rows if r["job"] == "teacher")["results"]
    assert json.loads((again / "settings.json").read_text())["jobs"] == ["balanced-anchor-attention"]
    report = (again / "study.md").read_text()
    assert f"(measured by the study in {out.resolve()})" in report and "not measured as converted" in report



@pytest.mark.slow  # about 55 s in CI (two study runs); `make test-slow`
def test_a_job_stopped_at_its_time_limit_resumes_from_its_checkpoint(study, tmp_path):
    """A job cut by --job-minutes writes a checkpoint; `run --resume` continues it with the study's own settings
    (steps, evals, overrides) to its last step, and the rows of both runs make one curve."""
    out = tmp_path / "s"
    grid = ["--lengths", "256", "--depths", "50", "--samples", "1", "--tasks", "single", "--parallel", "1"]
    study.main(["run", "--out", str(out), "--shapes", "balanced", "--keys", "anchor", "--presets", "attention",
                "--steps", "4", "--evals", "2", "--seq-len", "256", "--batch-size", "2", "--no-untrained",
                "--job-minutes", "0.000001", "--train", "lm_average=sample", *grid])
    job = out / "jobs" / "balanced-anchor-attention"
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["job"], r["step"], r.get("stopped_at_time_limit")) for r in rows] == [
        ("teacher", 0, None), ("balanced-anchor-attention", 1, True)]
    assert (job / "run" / "checkpoints" / "step-000001").is_dir()

    study.main(["run", "--out", str(out), "--resume", "--job-minutes", "100", "--parallel", "1"])
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r.get("failed")], rows
    assert [(r["job"], r["step"]) for r in rows] == [("teacher", 0), ("balanced-anchor-attention", 1),
                                                     ("balanced-anchor-attention", 2), ("balanced-anchor-attention", 4)]
    assert rows[-1]["stopped_at_time_limit"] is False
    summary = json.loads((job / "run" / "training_summary.json").read_text())
    assert summary["resumed_from"] == 1 and summary["steps"] == 4
    logged = [m["step"] for m in map(json.loads, (job / "run" / "metrics.jsonl").read_text().splitlines())
              if "loss" in m]
    assert logged[0] == 1 and logged[-1] == 4 and logged == sorted(set(logged))  # one log, continued
    assert yaml.safe_load((job / "run" / "recipe.yaml").read_text())["lm_average"] == "sample"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["resumed"][0]["jobs"] == ["balanced-anchor-attention"]
    job_row = json.loads((out / "study.json").read_text())["jobs"][0]
    assert job_row["steps"] == [1, 2, 4] and not job_row["time_limited"] and job_row["completed"]

    with pytest.raises(SystemExit, match="no job of .* stopped at its time limit"):
        study.main(["run", "--out", str(out), "--resume"])  # finished: nothing left to resume
    with pytest.raises(SystemExit, match="holds no earlier study"):
        study.main(["run", "--out", str(tmp_path / "none"), "--resume"])

def test_prompts_built_in_the_background_are_the_prompts_of_a_direct_build(study, monkeypatch, tmp_path):
    """A job builds its NIAH prompts in another process while it trains; the first measurement waits for them, and
    they are the prompts the measurement would have built itself with the trainer's tokenizer."""
    from transformers import AutoTokenizer

    teacher = ROOT / "slconvert" / "assets" / "tiny-teacher"
    spec = {"tasks": ["single", "multivalue"], "lengths": [256, 512], "depths": [0.0, 100.0], "samples": 2, "seed": 3}
    monkeypatch.setattr(study, "_GRIDS", {})
    study.prebuild_grids(teacher, spec, tmp_path)
    assert len(study._PREBUILD) == 1
    study._take_prebuilt()
    assert not study._PREBUILD and not (tmp_path / "prompts.pkl").exists()
    background = {task: [s.prompt for s in grid.samples] for task, grid in study._GRIDS.items()}
    monkeypatch.setattr(study, "_GRIDS", {})
    study._build_grids(AutoTokenizer.from_pretrained(teacher), spec)
    assert background == {task: [s.prompt for s in grid.samples] for task, grid in study._GRIDS.items()}
    assert [len(v) for v in background.values()] == [8, 8]


def test_a_deadline_shortens_each_job_so_it_measures_and_leaves_a_checkpoint(study):
    """With --deadline, a job trains until the deadline less --reserve (less its setup time), or its --job-minutes
    if that comes first, so it is never killed before measuring its model and writing its checkpoint."""
    now = 1000.0
    assert study.job_time_limit({"job_minutes": 8}, now) == 8.0
    assert study.job_time_limit({"job_minutes": 0}, now) == 0.0  # no limit
    stop_by = now + 300.0  # 270 s of training once its setup time is taken off
    assert study.job_time_limit({"job_minutes": 8, "stop_by": stop_by}, now) == 4.5
    assert study.job_time_limit({"job_minutes": 2, "stop_by": stop_by}, now) == 2.0
    assert study.job_time_limit({"job_minutes": 0, "stop_by": stop_by}, now) == 4.5
    assert study.job_time_limit({"job_minutes": 8, "stop_by": now - 5}, now) == study.MIN_TRAIN_S / 60  # never 0


def test_no_job_starts_too_late_to_measure_before_the_deadline(study, tmp_path):
    from types import SimpleNamespace

    rows = tmp_path / "rows.jsonl"
    job = {"name": "balanced-anchor-attention", "shape": "balanced", "key": "anchor", "preset": "attention"}
    args = SimpleNamespace(deadline=200.0, reserve=150.0, threads=1, parallel=1, gpus=1)
    study.run_jobs([job], rows, tmp_path / "jobs", args)  # 50 s left to train: less than setup + MIN_TRAIN_S
    assert [json.loads(line) for line in rows.read_text().splitlines()] == [
        {**{k: job[k] for k in ("shape", "preset")}, "job": job["name"], "search_key": "anchor", "failed": True,
         "reason": "not started before the deadline"}]
    # the teacher's row trains nothing: it starts whenever the deadline itself is ahead (here it fails at once:
    # no teacher at this path), and the training job after it is still refused
    rows.unlink()
    teacher = {"name": "teacher", "shape": "dense", "key": "-", "preset": "dense", "teacher": str(tmp_path / "none"),
               "rows": str(rows), "work": str(tmp_path / "t"), "tasks": ["single"], "lengths": [256],
               "depths": [50.0], "samples": 1, "seed": 0, "batch_size": 0, "seq_len": 0}
    study.run_jobs([teacher, job], rows, tmp_path / "jobs", args)
    assert [(r["job"], r.get("reason") or r.get("returncode")) for r in map(json.loads, rows.read_text().splitlines())] \
        == [("teacher", 1), ("balanced-anchor-attention", "not started before the deadline")]


def test_a_teacher_row_of_other_prompts_is_refused(study, tmp_path):
    """--teacher-row refuses, in one line and before any job, a study that measured other lengths."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "settings.json").write_text(json.dumps({
        "teacher": str(ROOT / "slconvert" / "assets" / "tiny-teacher"), "tasks": ["single"], "lengths": [512],
        "depths": [50.0], "samples": 1}))
    (earlier / "rows.jsonl").write_text(json.dumps({"job": "teacher", "preset": "dense", "step": 0, "results": {}})
                                        + "\n")
    with pytest.raises(SystemExit, match=r"it measured other lengths \(lengths: \[512\]\)"):
        study.main(["run", "--out", str(tmp_path / "s"), "--lengths", "256", "--depths", "50", "--samples", "1",
                    "--tasks", "single", "--teacher-row", str(earlier)])
    assert not (tmp_path / "s").exists()  # nothing written


@pytest.mark.parametrize("train, message", [
    ("max_steps=3", "cannot set 'max_steps': the study sets it from --steps"),
    ("data.niah_fraction=0.5;save_every=0", "cannot set 'save_every'"),
    ("lm_avrage=sample", "--train: unknown"),
    ("curriculum=[{seq_len: 256, steps: 1, batch_size: 3, micro_batch_size: 2}]",
     r"--train: curriculum\[0\] has batch_size 3 and micro_batch_size 2"),
])
def test_bad_train_overrides_are_refused_before_any_job(study, tmp_path, train, message):
    with pytest.raises(SystemExit, match=message):
        study.main(["run", "--out", str(tmp_path / "s"), "--train", train])
    assert not (tmp_path / "s").exists()  # nothing started


@pytest.mark.parametrize("argv, message", [
    (["teacher", "lm_avrage=sample"], r"^error: unknown"),
    (["teacher", "curriculum=[{seq_len:"], r"^error: override value .* is not valid YAML"),
    (["probes", "--common", "lr=fast", "a=batch_size=8"], r"^error: probe a: "),
    (["probes", "a=lr=1e-3", "b=batch_sise=8"], r"^error: probe b: unknown"),
])
def test_bad_teacher_overrides_are_one_line_before_any_model(study, tmp_path, argv, message):
    """The teacher and its probes read their overrides before building the untrained model: a bad one is one
    `error:` line and nothing is written."""
    command, rest = argv[0], argv[1:]
    with pytest.raises(SystemExit, match=message):
        study.main([command, "--out", str(tmp_path / "t"), *rest])
    assert not (tmp_path / "t").exists()


def test_best_of_a_folder_without_a_study_is_one_error_line(study, tmp_path):
    with pytest.raises(SystemExit, match="give the folder of a `conversion_study.py run`"):
        study.main(["best", str(tmp_path / "no-study")])


def test_compare_gives_each_model_its_ratio_at_every_length(reports, tmp_path, capsys):
    """`compare` on run 11's staged model against its teacher (20 prompts per cell): per length the mean over the
    three tasks against the teacher's, named by the file's stem."""
    grid = {"tasks": ["single", "multikey", "multivalue"], "lengths": [2048, 4096, 8192, 16384],
            "depths": [0, 25, 50, 75, 100], "samples": 4, "seed": 0}

    def answers(path, by_task):
        path.write_text(json.dumps({**grid, "results": {t: {"by_length": dict(zip(["2048", "4096", "8192", "16384"],
                                                                                  v))} for t, v in by_task.items()}}))
        return str(path)

    teacher = answers(tmp_path / "teacher.json", {"single": [100, 100, 100, 100], "multikey": [5, 55, 30, 30],
                                                  "multivalue": [81.25, 75, 80, 76.25]})
    staged = answers(tmp_path / "staged.json", {"single": [100, 100, 100, 100], "multikey": [25, 25, 40, 30],
                                                "multivalue": [56.25, 61.25, 56.25, 56.25]})
    result = reports.compare(teacher, [staged])
    got = [(c["length"], round(c["ratio"], 2)) for c in result["models"][0]["by_length"]]
    assert got == [(2048, 0.97), (4096, 0.81), (8192, 0.93), (16384, 0.90)]
    text = capsys.readouterr().out
    assert "| staged | single |" in text
    assert "staged: worst ratio 0.45" in text and "by length 0.97 / 0.81 / 0.93 / 0.90 (2048, 4096, 8192, 16384)" in text
