"""`slconvert eval` on bad input: one `error:` line, refused before any model is loaded where the input alone shows
the problem, and a run that fails leaves the output folder as it found it."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from slconvert.assets import TINY_TEACHER
from slconvert.cli import main
from slconvert.evaluation import models, niah_run
from slconvert.evaluation.runner import RESULT_FILES


def _eval(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args), "--device", "cpu"])


def _one_error_line(result, needle: str) -> str:
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(errors) == 1 and errors[0].startswith(f"error: {needle}"), result.output
    assert "Traceback" not in result.output
    return errors[0]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading a model fails the test: what is checked here must be refused before."""

    def load(path, **_):
        raise AssertionError(f"{path} was loaded before the input was checked")

    monkeypatch.setattr(models, "load_eval_model", load)


@pytest.fixture
def inputs(tmp_path) -> Path:
    (tmp_path / "bad.jsonl").write_text('{"text": "a first document"}\nnot json\n')
    (tmp_path / "number.jsonl").write_text('{"text": 5}\n')
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "zeros.txt").write_bytes(b"\x00" * 512)
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["--niah", "--lengths", "10000000"], "prompts of length 10000000 do not fit the model's 8192 tokens"),
    (["--niah", "--lengths", "400,700", "--max-length", "500"], "prompts of length 700 do not fit the model's 500"),
    (["--niah", "--samples", "0"], "--samples 0 must be at least 1"),
    (["--niah", "--lengths", "1024,16"], "length 16 leaves -112 tokens for the prompt after the 128-token generation "
                                         "budget, and the prompt without haystack is 86 tokens"),
    (["--niah", "--lengths", "10000000,20", "--skip-too-long", "--niah-style", "slconvert"],
     "length 20 is shorter than the prompt without haystack (89 tokens)"),
    (["--niah", "--lengths", "400:300:10"], "--lengths '400:300:10' runs backwards (start 400 > stop 300)"),
    (["--niah", "--depths", "x"], "--depths 'x' is not a comma-separated list of numbers (or start:stop:step); e.g. "
                                  "0,50,100 or 0:100:10 (percent)"),
    (["--niah", "--depths", "0,50,150"], "--depths 150 is outside 0..100"),
    (["--niah", "--depths", "-10,50,101"], "--depths -10, 101 are outside 0..100"),
    (["--tasks", "slc_passkey,no_such_task"], "unknown lm-eval task(s) ['no_such_task']"),
    (["--niah", "--compare", "{dir}/nosuch"], "model path {dir}/nosuch does not exist"),
    (["--perplexity", "{dir}/bad.jsonl"], "{dir}/bad.jsonl:2 is not a JSON object with a \"text\" string"),
    (["--perplexity", "{dir}/number.jsonl"], "{dir}/number.jsonl:1 is not a JSON object with a \"text\" string"),
    (["--perplexity", "{dir}/weights.bin"], "{dir}/weights.bin is not UTF-8 text (byte 128)"),
    (["--perplexity", "{dir}/zeros.txt"], "{dir}/zeros.txt is not text (it holds NUL bytes)"),
    (["--span-recall", "--span-text", "{dir}/weights.bin"], "{dir}/weights.bin is not UTF-8 text"),
])
def test_input_that_cannot_run_is_refused_before_the_model_loads(no_model_loads, inputs, args, needle):
    out = inputs / "out"
    args = [a.format(dir=inputs) for a in args]
    _one_error_line(_eval(TINY_TEACHER, *args, "--out", out), needle.format(dir=inputs))
    assert not out.exists()


@pytest.fixture
def task_files(tmp_path) -> Path:
    (tmp_path / "syntax.yaml").write_text("task: x\n  bad: [\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00task")
    (tmp_path / "numbers.yaml").write_text("task: [1, 2]\n")
    (tmp_path / "folder.yaml").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "{dir}/syntax.yaml"], "task file {dir}/syntax.yaml is not valid YAML (mapping values are not allowed"),
    (["--tasks", "{dir}/list.yaml"], "task file {dir}/list.yaml is not a mapping of lm-eval task settings"),
    (["--tasks", "{dir}/binary.yaml"], "task file {dir}/binary.yaml is not UTF-8 text"),
    (["--tasks", "{dir}/numbers.yaml"], "{dir}/numbers.yaml has `task: [1, 2]`, which is no task name"),
    (["--tasks", "{dir}/folder.yaml"], "task file {dir}/folder.yaml is a directory"),
    (["--tasks", "slc_passkey", "--task-lengths", "0"], "--task-lengths 0 must be positive token counts"),
    (["--tasks", "slc_passkey", "--task-lengths", "1024,100000000"],
     "--task-lengths 100000000 do not fit the model's 8192 tokens"),
    (["--tasks", "slc_passkey", "--seed", "-1"], "--seed -1 is outside 0..4294967295"),
    (["--niah", "--seed", "4294967296"], "--seed 4294967296 is outside 0..4294967295"),
    (["--niah", "--samples", "100000000"], "--samples 100000000 is more than 1000 prompts per cell"),
    (["--span-recall"], "{model} is not a converted checkpoint: span recall needs Superlinear layers"),
    (["--niah", "--span-text", "{dir}/syntax.yaml"], "--span-text is read only by --span-recall"),
    (["--niah", "--chat-template"], "the tokenizer of {model} has no chat template; leave out --chat-template"),
    (["--niah", "--haystack", ","], "--haystack ',' names no file or folder"),
    (["--tasks", "slc_passkey", "--task-metadata", '{{"max_seq_lengths": "abc"}}'],
     '--task-metadata max_seq_lengths is "abc", not a list of positive token counts'),
    (["--tasks", "slc_passkey", "--task-metadata", '{{"max_seq_lengths": [999999]}}'],
     "--task-lengths 999999 do not fit the model's 8192 tokens"),
    (["--tasks", "slc_passkey", "--task-lengths", "8192,8193"], "--task-lengths 8193 do not fit the model's 8192 tokens"),
    (["--tasks", "slc_passkey", "--task-metadata", '{{"max_seq_lengths": [8193, 512, 8193]}}'],
     "--task-lengths 8193 do not fit the model's 8192 tokens"),
    (["--tasks", "slc_passkey", "--task-lengths", "512", "--task-metadata", '{{"max_seq_lengths": [1024]}}'],
     "--task-lengths and max_seq_lengths in --task-metadata both set the task lengths"),
])
def test_bad_task_files_and_numbers_are_refused_before_the_model_loads(no_model_loads, task_files, args, needle):
    """The task files ended in a ScannerError, AttributeError or UnicodeDecodeError traceback; --task-lengths 0 was
    refused after the model loaded and 100000000 built prompts for hours; a seed outside numpy's range ended in its
    ValueError traceback once lm-eval ran; --samples 100000000 built prompts until memory ran out; --span-recall on
    a source checkpoint loaded it and built the text first; lengths given as lm-eval's max_seq_lengths in
    --task-metadata were never checked (a ValueError traceback, or prompts built for hours)."""
    out = task_files / "out"
    args = [a.format(dir=task_files) for a in args]
    _one_error_line(_eval(TINY_TEACHER, *args, "--out", out), needle.format(dir=task_files, model=TINY_TEACHER))
    assert not out.exists()


def test_a_span_length_over_the_context_is_refused_before_the_model_loads(no_model_loads, tmp_path):
    """It built 100000000 tokens of text (hours) before the model said the text was too long."""
    from slconvert.assets import TINY_CONVERTED

    for length in ("100000000", "8193"):  # 8192 tokens fit
        result = _eval(TINY_CONVERTED, "--span-recall", "--span-length", length, "--out", tmp_path / "out")
        _one_error_line(result, f"--span-length {length} is over the model's 8192 tokens")


def test_a_span_length_inside_the_window_is_refused_before_the_model_loads(no_model_loads, tmp_path):
    """Text that never leaves the window has no query span recall can score: it was built and run, after every
    other task, and then reported."""
    from slconvert.assets import TINY_CONVERTED
    from slconvert.loading import converted_params

    window = converted_params(TINY_CONVERTED).window
    for length, refused in ((window + 1, True), (window + 2, False)):
        result = _eval(TINY_CONVERTED, "--span-recall", "--span-length", length, "--out", tmp_path / "out")
        if refused:
            _one_error_line(result, f"--span-length {length} ({length} tokens) never leaves the attention window "
                                    f"(W = {window}); use at least {window + 2} tokens")
        else:  # the check passed: the model was about to load
            assert "was loaded before the input was checked" in repr(result.exception), result.output


def test_a_short_span_text_is_refused_before_any_task_runs(tmp_path, monkeypatch):
    """A --span-text shorter than the window was reported as a --span-length problem, once the needle task had
    run; now the text is named, before any task runs."""
    from slconvert.assets import TINY_CONVERTED
    from slconvert.evaluation import runner
    from slconvert.loading import converted_params

    def no_task(*_, **__):
        raise AssertionError("a task ran before the span-recall text was checked")

    monkeypatch.setattr(runner, "run_niah", no_task)
    (tmp_path / "short.txt").write_text("a few words only")
    result = _eval(TINY_CONVERTED, "--niah", "--span-recall", "--span-text", tmp_path / "short.txt",
                   "--out", tmp_path / "out")
    line = _one_error_line(result, "the longest --span-text text (")
    assert f"never leaves the attention window (W = {converted_params(TINY_CONVERTED).window})" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [0, -5])
def test_a_context_length_of_zero_or_less_is_refused(no_model_loads, tmp_path, value):
    """max_position_embeddings 0 or -5 was taken as no limit at all; --max-length still overrides it."""
    model = tmp_path / "model"
    shutil.copytree(TINY_TEACHER, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": value}))
    _one_error_line(_eval(model, "--niah", "--out", tmp_path / "out"),
                    f"config.json's max_position_embeddings is {value}, not a context length")
    result = _eval(model, "--niah", "--max-length", "4096", "--out", tmp_path / "out")
    assert "was loaded before the input was checked" in repr(result.exception), result.output


def test_a_task_whose_data_is_on_the_hub_is_one_line(tmp_path):
    """`datasets` asked the hub, was refused (offline), and the ConnectionError ended in a traceback."""
    task = tmp_path / "hub.yaml"
    task.write_text("task: slc_hub_task\ndataset_path: someone/some_dataset\noutput_type: generate_until\n"
                    "test_split: test\ndoc_to_text: '{{text}}'\ndoc_to_target: '{{answer}}'\n")
    out = tmp_path / "out"
    result = _eval(TINY_TEACHER, "--tasks", task, "--limit", "1", "--out", out)
    line = _one_error_line(result, "the data of lm-eval task(s) slc_hub_task is not on this machine")
    assert "this tool downloads nothing" in line
    assert not out.exists()


def test_the_compared_models_context_counts_before_either_loads(no_model_loads, tmp_path):
    short = tmp_path / "short"
    short.mkdir()
    for file in TINY_TEACHER.iterdir():
        (short / file.name).symlink_to(file)
    config = json.loads((TINY_TEACHER / "config.json").read_text())
    (short / "config.json").unlink()
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 512}))
    result = _eval(TINY_TEACHER, "--niah", "--lengths", "400,1024", "--compare", short, "--out", tmp_path / "out")
    _one_error_line(result, "prompts of length 1024 do not fit the model's 512 tokens")


def test_lengths_over_the_context_are_skipped_without_building_their_prompts(tmp_path, monkeypatch):
    build = niah_run.build_sample

    def bounded(tokenizer, haystack, task, length, *args, **kwargs):
        assert length <= 8192, f"a prompt of {length} tokens was built for a model of 8192"
        return build(tokenizer, haystack, task, length, *args, **kwargs)

    monkeypatch.setattr(niah_run, "build_sample", bounded)
    out = tmp_path / "out"
    result = _eval(TINY_TEACHER, "--niah", "--niah-style", "slconvert", "--mode", "teacher", "--lengths",
                   "256,10000000", "--depths", "50", "--samples", "2", "--skip-too-long", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "niah_results.json").read_text())
    assert [(s["length"], s["sample"]) for s in data["skipped"]] == [(10000000, 0), (10000000, 1)]
    assert data["table"]["scores"][0][1] is None and data["table"]["skipped"] == 2


def _full_disk_for(stem: str, suffix: str, monkeypatch):
    """Writing a file named after `stem` with `suffix` (or its temporary copy) fails as on a full disk."""
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if stem in self.name and self.name.endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)


_NIAH = ["--niah", "--niah-style", "slconvert", "--mode", "teacher", "--lengths", "256", "--depths", "50",
         "--samples", "1"]


def test_a_run_failing_before_a_mode_finished_removes_the_folder_it_created(tmp_path, monkeypatch):
    _full_disk_for("niah_results", "", monkeypatch)  # after the heatmap and table: NIAH has not finished
    out = tmp_path / "new" / "out"
    _one_error_line(_eval(TINY_TEACHER, *_NIAH, "--out", out, "--force"), "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_after_a_mode_finished_keeps_that_modes_files(tmp_path, monkeypatch):
    _full_disk_for("summary", "", monkeypatch)
    out = tmp_path / "new" / "out"
    result = _eval(TINY_TEACHER, *_NIAH, "--out", out)
    _one_error_line(result, "cannot write")
    kept = ["niah_heatmap.png", "niah_results.csv", "niah_results.json", "niah_table.csv"]
    assert sorted(p.name for p in out.iterdir()) == kept
    assert f"note: the results finished before the failure are kept in {out}: {', '.join(kept)}" in result.stderr


def test_a_failed_run_removes_its_files_and_keeps_what_was_there(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.json").write_text("an earlier run's")
    _full_disk_for("niah_results", ".json", monkeypatch)
    _one_error_line(_eval(TINY_TEACHER, *_NIAH, "--out", out, "--force"), "cannot write")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    assert (out / "notes.txt").read_text() == "mine"


def test_an_error_during_the_grid_starts_its_own_line(tmp_path, monkeypatch):
    from slconvert.errors import SlconvertError

    def fails(*args, **kwargs):
        raise SlconvertError("the model failed")

    monkeypatch.setattr(niah_run, "last_logits", fails)
    result = _eval(TINY_TEACHER, *_NIAH, "--out", tmp_path / "out")
    assert result.exit_code == 2
    shown = [line.rsplit("\r", 1)[-1] for line in result.stderr.rstrip("\n").split("\n")]  # as a terminal shows each line
    assert shown[-1] == "error: the model failed", repr(result.stderr)
    assert not (tmp_path / "out").exists()


def test_an_earlier_evaluation_is_never_replaced_without_force(tmp_path, monkeypatch):
    """A second run into an --out that holds an evaluation is refused before any model loads (it would replace the
    summary and leave the first run's other files without one); --force writes there."""
    out = tmp_path / "out"
    args = [TINY_TEACHER, "--niah", "--niah-style", "slconvert", "--lengths", "256", "--depths", "50", "--samples", "1",
            "--out", out]
    assert _eval(*args).exit_code == 0
    first = (out / "summary.json").read_bytes()
    load = models.load_eval_model
    monkeypatch.setattr(models, "load_eval_model", lambda path, **_: pytest.fail(f"{path} was loaded"))
    _one_error_line(_eval(*args), f"--out {out} already holds an earlier run's results (summary.json, summary.md, "
                                  "niah_results.json")
    assert (out / "summary.json").read_bytes() == first
    monkeypatch.setattr(models, "load_eval_model", load)
    assert _eval(*args, "--force").exit_code == 0


def test_the_files_an_interrupted_run_kept_are_never_replaced_without_force(tmp_path, monkeypatch):
    """An interrupted run keeps its finished modes' files but writes no summary; the check looked for the summary
    alone, so the next run replaced them silently. It now looks for every file an evaluation writes."""
    _full_disk_for("summary", "", monkeypatch)
    out = tmp_path / "out"
    _one_error_line(_eval(TINY_TEACHER, *_NIAH, "--out", out), "cannot write")
    monkeypatch.undo()
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert kept and "summary.json" not in kept and set(kept) <= set(RESULT_FILES)
    _one_error_line(_eval(TINY_TEACHER, *_NIAH, "--out", out), f"--out {out} already holds an earlier run's results "
                    "(niah_results.json, niah_results.csv, niah_heatmap.png, niah_table.csv); choose a new folder")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept


def test_every_file_an_evaluation_writes_is_one_the_check_knows(tmp_path):
    """RESULT_FILES is what the --out check looks for: a file a mode writes outside it would be replaced unasked."""
    from slconvert.assets import TINY_CONVERTED

    out = tmp_path / "out"
    doc = tmp_path / "doc.txt"
    doc.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    result = _eval(TINY_CONVERTED, *_NIAH, "--compare", TINY_TEACHER, "--perplexity", doc, "--span-recall",
                   "--span-length", "256", "--out", out)
    assert result.exit_code == 0, result.output
    written = {p.name for p in out.iterdir()}
    assert {"summary.json", "niah_compare.png", "perplexity.json", "span_recall.png"} <= written <= set(RESULT_FILES)
