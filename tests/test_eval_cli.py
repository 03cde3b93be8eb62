"""`slconvert eval` end to end on a tiny converted model and its source: files, tables, figures, refusals."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch
from cli_helpers import tiny_pair
from click.testing import CliRunner
from needle_oracle import oracle_model

from slconvert.assets import TINY_TEACHER
from slconvert.cli import main
from slconvert.evaluation import models
from slconvert.tasks.haystack import SyntheticHaystack


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("eval_cli"), seed=2)


def _eval(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args), "--device", "cpu"])


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_difference_table_is_model_minus_source_where_both_have_a_score():
    """Cell by cell, the converted model's score less the source's; a cell either misses is None and stays out of
    the average ((20 + 0) / 2); the printed difference carries its sign."""
    from slconvert.evaluation.report import diff_table, format_grid

    model = {"task": "single", "lengths": [256, 512], "depths": [0, 100], "scores": [[100.0, None], [50.0, 0.0]],
             "average": 50.0}
    source = {**model, "scores": [[80.0, 10.0], [50.0, None]], "average": 46.7}
    diff = diff_table(model, source)
    assert diff["scores"] == [[20.0, None], [0.0, None]] and diff["average"] == 10.0
    text = format_grid(diff, "difference", signed=True)
    assert "(average +10.0)" in text and "| 0% | +20.0 | skip |" in text


def test_the_task_table_is_model_minus_source_without_error_bars_or_lengths_not_asked_for(tmp_path, monkeypatch):
    """lm-eval's results as `run_tasks` tabulates them: one row per metric, named without lm-eval's filter; the
    standard errors and RULER's -1 for a length that was not asked for left out, any other score kept; the models
    compared at the tighter context; the difference is the model's score less the source's, None where the source
    has no score."""
    from slconvert.evaluation import lmeval, plots
    from slconvert.evaluation.runner import RunContext, run_tasks

    results = {
        "tuned": {"slc_passkey": {"alias": "slc_passkey", "exact_match,none": 0.75, "exact_match_stderr,none": 0.1,
                                  "logprob,none": -1},
                  "niah_single_1": {"512,none": 1.0, "1024,none": -1, "512_stderr,none": "N/A"}},
        "plain": {"slc_passkey": {"exact_match,none": 0.5, "logprob,none": -3}, "niah_single_1": {}},
    }
    asked = []

    def run_lm_eval(em, spec, **kwargs):
        asked.append(kwargs["max_length"])
        return {"results": results[em.name]}

    monkeypatch.setattr(lmeval, "run_lm_eval", run_lm_eval)
    monkeypatch.setattr(plots, "lm_eval_bars", lambda rows, path, *names: path)  # the table is what is checked here
    model, source = SimpleNamespace(name="tuned", max_length=1024), SimpleNamespace(name="plain", max_length=2048)
    ctx = RunContext(out=tmp_path, model=model, base=source, echo=lambda text: None)
    result, text = run_tasks(ctx, "slc_passkey,niah_single_1", batch_size=1, limit=None, task_lengths=None,
                             task_metadata={})
    assert asked == [1024, 1024] and result["max_length"] == 1024
    assert result["table"] == [
        {"task": "slc_passkey", "metric": "exact_match", "tuned": 0.75, "plain (source)": 0.5, "difference": 0.25},
        {"task": "slc_passkey", "metric": "logprob", "tuned": -1, "plain (source)": -3, "difference": 2},
        {"task": "niah_single_1", "metric": "512", "tuned": 1.0, "plain (source)": None, "difference": None}]
    assert "| slc_passkey | exact_match | 0.75 | 0.5 | 0.25 |" in text


def test_the_span_recall_section_gives_each_layers_mean_over_its_heads_and_its_weakest_head(tmp_path, monkeypatch):
    """summary.md's span recall table: per layer the mean of its heads' recall and the lowest one (heads 0.25 and
    0.75: mean 0.5, weakest 0.25), beside the layer's window and its query rows past the window."""
    from slconvert.evaluation import span_recall
    from slconvert.evaluation.runner import RunContext, run_span_recall

    measured = {"tokens": 120, "average": 0.5, "layers": [
        {"layer": 1, "window": 64, "queries_beyond_window": 56, "recall": [0.25, 0.75], "recall_all": [0.2, 0.7]}]}
    monkeypatch.setattr(span_recall, "span_recall", lambda em, texts, ids=None: measured)
    ctx = RunContext(out=tmp_path, model=SimpleNamespace(name="tuned"), echo=lambda text: None)
    _, text = run_span_recall(ctx, texts=["a text"], length=120)
    assert text.startswith("### Span recall (120 tokens; queries beyond the window; average 50.0%)")
    assert text.endswith("| layer | window | queries | mean recall | min head |\n|---|---|---|---|---|\n"
                         "| 1 | 64 | 56 | 0.5 | 0.25 |")


def test_niah_generation_grid_with_compare(checkpoints, tmp_path):
    source, converted = checkpoints
    out = tmp_path / "out"
    result = _eval(converted, "--niah", "--niah-style", "slconvert", "--lengths", "400,470", "--depths", "0,100",
                   "--samples", "1", "--compare", source, "--chunk-size", "150", "--batch-size", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "depth \\ length | 400 | 470" in result.output and "difference (converted - source)" in result.output
    _png(out / "niah_heatmap.png")
    _png(out / "niah_compare.png")
    data = json.loads((out / "niah_results.json").read_text())
    table = data["table"]
    assert table["lengths"] == [400, 470] and table["depths"] == [0.0, 100.0]
    assert len(table["scores"]) == 2 and all(len(row) == 2 for row in table["scores"])
    assert data["mode"] == "generate" and data["skipped"] == []
    records = data["records"]
    assert len(records) == 8  # 2 lengths x 2 depths x 1 sample x 2 models
    assert all(r["tokens"] == r["length"] for r in records)
    assert all("output" in r and r["score"] in (0.0, 1.0) for r in records)  # one needle: found or not
    for label, role_records in (("converted", [r for r in records if r["model"] == "converted"]),
                                ("source (source)", [r for r in records if r["model"] == "source (source)"])):
        kinds = data["answer_kinds"][label]
        assert kinds["prompts"] == 4 and sum(kinds["values_found"].values()) == 4
        assert kinds["values_found"].get("1", 0) == sum(r["score"] for r in role_records)  # JSON keys are strings
        assert f"Answers of {label} (4 prompts): " in result.output
    converted_rows = [r for r in records if r["model"] == "converted"]
    source_rows = [r for r in records if r["model"] == "source (source)"]
    assert [r["seed"] for r in converted_rows] == [r["seed"] for r in source_rows]  # same prompts
    rows = list(csv.DictReader((out / "niah_table.csv").open()))
    assert {(int(r["length"]), float(r["depth"])) for r in rows} == {(400, 0), (400, 100), (470, 0), (470, 100)}
    diff = json.loads((out / "niah_results.json").read_text())["diff_table"]
    for d_row, a_row, b_row in zip(diff["scores"], table["scores"], data["base_table"]["scores"]):
        assert d_row == pytest.approx([a - b for a, b in zip(a_row, b_row)])
    assert (out / "niah_diff.csv").exists() and (out / "niah_results.csv").exists()
    summary = json.loads((out / "summary.json").read_text())
    env = summary["environment"]
    assert env["device"].startswith("CPU") and env["packages"]["torch"] and env["packages"]["transformers"]
    assert summary["seeds"] == {"seed": 0}
    assert [m["converted"] for m in summary["models"]] == [True, False]
    assert summary["results"]["niah"]["table"]["lengths"] == [400, 470]
    md = (out / "summary.md").read_text()
    assert "## Results" in md and "NIAH single (generate)" in md and "device: CPU" in md


def test_teacher_forced_perplexity_span_recall_and_tasks(checkpoints, tmp_path):
    source, converted = checkpoints
    out = tmp_path / "out"
    doc = tmp_path / "doc.txt"
    doc.write_text(SyntheticHaystack(9).text(600)[:600])
    result = _eval(converted, "--niah", "--niah-style", "slconvert", "--mode", "teacher", "--task", "multikey",
                   "--lengths", "420",
                   "--depths", "0:100:50", "--samples", "2", "--compare", source, "--perplexity", doc,
                   "--chunk-size", "50", "--span-recall", "--span-length", "120",
                   "--tasks", "slc_passkey_tf", "--task-lengths", "400", "--task-metadata", '{"num_samples": 2}',
                   "--limit", "1", "--out", out)
    assert result.exit_code == 0, result.output
    niah = json.loads((out / "niah_results.json").read_text())
    assert niah["table"]["depths"] == [0.0, 50.0, 100.0] and niah["mode"] == "teacher"
    assert all({"exact", "token_accuracy", "answer_logprob"} <= set(r) for r in niah["records"])
    assert len(niah["records"]) == 12
    ppl = json.loads((out / "perplexity.json").read_text())
    assert ppl["model"]["tokens"] == ppl["base"]["tokens"] > 100
    for key, path in (("model", converted), ("base", source)):  # chunks of 50 through the cache = one whole forward
        em = models.load_eval_model(path, device="cpu")
        ids = em.tokenizer(doc.read_text(), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = em.model(input_ids=ids).logits[0, :-1].float()
        whole = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).exp().item()
        assert ppl[key]["perplexity"] == pytest.approx(whole, rel=1e-4), key
    recall = json.loads((out / "span_recall.json").read_text())
    assert [layer["layer"] for layer in recall["layers"]] == [1, 3]
    assert recall["tokens"] == 120 and 0 < recall["average"] < 1  # a random router misses some dense mass
    # the command measured the built-in text of --span-length tokens for the run's seed: the numbers of the
    # function (checked against a brute force in test_eval_models) on that text
    from slconvert.evaluation.runner import _builtin_text
    from slconvert.evaluation.span_recall import span_recall

    em = models.load_eval_model(converted, device="cpu")
    want = span_recall(em, [_builtin_text(em.tokenizer, 120, 0)])
    assert recall["layers"] == json.loads(json.dumps(want["layers"])) and recall["average"] == want["average"]
    _png(out / "span_recall.png")
    rows = list(csv.DictReader((out / "span_recall.csv").open()))
    assert len(rows) == 2 * 4  # layers x query heads
    lm = json.loads((out / "lm_eval_results.json").read_text())
    assert lm["max_length"] == 4096
    metrics = {(r["task"], r["metric"]) for r in lm["table"]}
    assert ("slc_passkey_tf", "acc") in metrics
    assert all("difference" in r for r in lm["table"])
    # --limit 1: one of the task's two documents, for each model, and the summary records it
    assert {role: r["n-samples"]["slc_passkey_tf"] for role, r in lm["lm_eval"].items()} == {
        role: {"original": 2, "effective": 1} for role in ("model", "base")}
    assert json.loads((out / "summary.json").read_text())["command"]["limit"] == 1
    _png(out / "lm_eval.png")
    md = (out / "summary.md").read_text()
    for heading in ("NIAH multikey (teacher)", "Perplexity", "Span recall", "lm-eval tasks"):
        assert heading in md


def test_refuses_prompts_over_the_context(checkpoints, tmp_path):
    """A length over the limit is refused before any model loads (tests/test_eval_bad_input.py); a prompt that fits
    but whose answer does not, once it is built."""
    _, converted = checkpoints
    result = _eval(converted, "--niah", "--niah-style", "slconvert", "--lengths", "400", "--depths", "50",
                   "--samples", "1", "--max-length", "402", "--out", tmp_path / "a")
    assert result.exit_code == 2
    assert "error: prompts of length 400 (needs" in result.output and "do not fit the model's 402" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "a").exists()


def test_skips_and_counts_prompts_over_the_context(checkpoints, tmp_path):
    _, converted = checkpoints
    out = tmp_path / "b"
    result = _eval(converted, "--niah", "--niah-style", "slconvert", "--mode", "teacher", "--lengths", "400,600",
                   "--depths", "0,100", "--samples", "1", "--max-length", "500", "--skip-too-long", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "niah_results.json").read_text())
    assert len(data["skipped"]) == 2 and {s["length"] for s in data["skipped"]} == {600}
    assert [row[1] for row in data["table"]["scores"]] == [None, None]
    assert data["table"]["skipped"] == 2 and "2 prompt(s) skipped" in result.output
    _png(out / "niah_heatmap.png")


@pytest.mark.parametrize("args, message", [
    ([], "nothing to evaluate"),
    (["--niah", "--lengths", "10,abc"], "--lengths '10,abc' is not a comma-separated list"),
    (["--perplexity", "/nonexistent/docs"], "--perplexity /nonexistent/docs does not exist"),
    (["--tasks", "slc_passkey", "--task-metadata", "{bad"], "--task-metadata is not valid JSON"),
    (["--niah", "--haystack", "essay"], "the essay haystack is read from a local folder, never downloaded: pass "
                                        "--haystack DIR"),
    (["--niah", "--chat-template"], "the tokenizer of"),
    (["--niah", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
])
def test_bad_input_is_one_line(checkpoints, tmp_path, args, message):
    _, converted = checkpoints
    result = _eval(converted, *args, "--out", tmp_path / "c")
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output and "Traceback" not in result.output


def test_niah_scores_models_whose_answers_are_known(tmp_path, monkeypatch):
    """RULER-style prompts by default: a model that copies the asked needle scores 100, one that never answers 0."""
    monkeypatch.setattr(models, "load_eval_model", lambda path, **_: oracle_model(TINY_TEACHER, path.name))
    for name in ("copy", "never"):  # checked as checkpoints before loading
        (tmp_path / name).symlink_to(TINY_TEACHER, target_is_directory=True)
    out = tmp_path / "out"
    result = _eval(tmp_path / "copy", "--niah", "--lengths", "400,512", "--depths", "0,50,100", "--samples", "2",
                   "--compare", tmp_path / "never", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "niah_results.json").read_text())
    assert data["style"] == "ruler" and data["haystack"] == {"kind": "noise"}
    assert data["table"]["average"] == 100.0 and data["base_table"]["average"] == 0.0
    assert data["diff_table"]["scores"] == [[100.0, 100.0]] * 3
    copied = [r for r in data["records"] if r["model"] == "copy-oracle"]
    assert len(copied) == 12 and all(r["tokens"] == r["length"] - 128 for r in copied)  # 128-token budget counted
    assert all(r["output"].strip() == r["expected"][0] for r in copied)
    assert len({r["needle_depth"] for r in copied}) == 12  # drawn at random, each prompt its own
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"]["niah"]["style"] == "ruler" and summary["command"]["niah"]["haystack"] == "noise"
    assert "NIAH single (generate, ruler prompts)" in result.output

    result = _eval(tmp_path / "copy", "--niah", "--niah-style", "slconvert", "--task", "multivalue", "--lengths",
                   "400", "--depths", "50", "--samples", "2", "--compare", tmp_path / "never", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "niah_results.json").read_text())
    assert data["table"]["scores"] == [[100.0]] and data["base_table"]["scores"] == [[0.0]]
    assert all(r["tokens"] == 400 and r["needle_depth"] == 50.0 for r in data["records"])


def test_shipped_teacher_retrieves_with_this_tools_prompts(tmp_path):
    """The tiny teacher was trained on the slconvert-style prompts and answers them all at 256 tokens."""
    out = tmp_path / "teacher"
    result = _eval(TINY_TEACHER, "--niah", "--niah-style", "slconvert", "--lengths", "256", "--depths", "0,50,100",
                   "--samples", "1", "--out", out)
    assert result.exit_code == 0, result.output
    table = json.loads((out / "niah_results.json").read_text())["table"]
    assert table["scores"] == [[100.0], [100.0], [100.0]], table


def test_span_recall_refuses_a_source_model(checkpoints, tmp_path):
    source, _ = checkpoints
    result = _eval(source, "--span-recall", "--span-length", "100", "--out", tmp_path / "d")
    assert result.exit_code == 2 and "not a converted checkpoint" in result.output
