"""Command-line mistakes and output locations: one `error:` line, exit 2, nothing written where it must not be."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from slconvert.checkpoint import directory_digest
from slconvert.cli import main
from slconvert.errors import SlconvertError
from slconvert.outputs import check_output_dir, write_text_atomically


def _refused(args: list[str], needle: str) -> str:
    result = CliRunner().invoke(main, args, prog_name="slconvert")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["convert", "--bogus"], "No such option '--bogus'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["--bogus"], "No such option '--bogus'"),
    (["convert", "a", "b", "--search-key", "bad"], "'bad' is not one of 'anchor', 'span_mean'"),
    (["eval", "m", "--samples", "x"], "'x' is not a valid integer"),
    (["train"], "Missing argument 'RECIPE'"),
    (["convert", "src", "--seed"], "Option '--seed' requires an argument"),
])
def test_usage_mistakes_are_one_line_naming_the_help(args, needle):
    line = _refused(args, needle)
    command = "slconvert " + args[0] if args[0] in main.commands else "slconvert"
    assert line.endswith(f"(see `{command} --help`)")


def test_no_command_prints_the_help():
    result = CliRunner().invoke(main, [], prog_name="slconvert")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == CliRunner().invoke(main, ["--help"], prog_name="slconvert").stdout
    assert result.stdout.startswith("Usage: slconvert [OPTIONS] COMMAND")


def test_help_and_version_still_exit_zero():
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    assert runner.invoke(main, ["convert", "--help"]).exit_code == 0
    assert "version" in runner.invoke(main, ["--version"]).output


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "niah_heatmap.png").write_bytes(b"recorded")
    return model


@pytest.mark.parametrize("where", ["model", "model/results", "compare"])
def test_eval_never_writes_into_an_input_checkpoint(tmp_path, model_dir, where):
    base = tmp_path / "compare"
    base.mkdir()
    (base / "config.json").write_text("{}")
    before = directory_digest(model_dir), directory_digest(base)
    _refused(["eval", str(model_dir), "--niah", "--compare", str(base), "--out", str(tmp_path / where)], "lies inside")
    assert (directory_digest(model_dir), directory_digest(base)) == before


def test_bench_never_writes_into_the_model(model_dir):
    before = directory_digest(model_dir)
    _refused(["bench", "--model", str(model_dir), "--device", "cpu", "--out", str(model_dir)], "lies inside")
    assert directory_digest(model_dir) == before


@pytest.mark.parametrize("command", [["eval", "m", "--niah"], ["bench", "--model", "m", "--device", "cpu"]])
def test_an_output_below_a_file_is_refused_before_any_work(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(command + ["--out", str(afile)], "is a file" if command[0] == "bench" else "exists and is not a directory")
    _refused(command + ["--out", str(afile / "out")], "is a file, not a directory")


@pytest.mark.parametrize("args, needle", [
    (["--niah", "--lengths", "1:1000000000:1"], "gives more than 1000 values"),
    (["--niah", "--depths", "0:100:0.0000001"], "gives more than 1000 values"),
    (["--tasks", "slc_passkey", "--limit", "0"], "--limit 0 must be at least 1"),
    (["--tasks", "slc_passkey", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
    (["--span-recall", "--span-length", "0"], "--span-length 0 must be at least 2"),
])
def test_eval_numbers_out_of_range_fail_before_loading(tmp_path, args, needle):
    _refused(["eval", str(tmp_path / "missing-model"), *args, "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


def test_eval_number_lists_include_the_stop_and_drop_repeats():
    """start:stop:step includes its stop; a value given twice (also through a range) is measured once; a range is
    refused from 1001 values on (0:1000:1), and 1:1000:1 gives its 1000."""
    from slconvert.commands.eval import _numbers

    assert _numbers("0:100:25", "--depths", float) == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert _numbers("1024,2048,1024,1024:2048:1024", "--lengths") == [1024, 2048]
    assert len(_numbers("1:1000:1", "--lengths")) == 1000
    with pytest.raises(SlconvertError, match="--lengths '0:1000:1' gives more than 1000 values"):
        _numbers("0:1000:1", "--lengths")


def test_eval_number_ranges_with_a_fractional_step_keep_their_stop_and_exact_values():
    """A fractional step lands on its stop and on the values a person wrote (0.3, not 0.30000000000000004): a
    running sum of 0.1 misses 0.3 in 0:0.3:0.1 and drifts in 0:1:0.1."""
    from slconvert.commands.eval import _numbers

    assert _numbers("0:0.3:0.1", "--depths", float) == [0.0, 0.1, 0.2, 0.3]
    assert _numbers("0:1:0.1", "--depths", float) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert _numbers("50:51.2:0.4", "--depths", float) == [50.0, 50.4, 50.8, 51.2]
    assert _numbers("0:1:0.3", "--depths", float) == [0.0, 0.3, 0.6, 0.9]  # a stop between two steps stays out


@pytest.mark.parametrize("args", [["--lengths", ","], ["--lengths", ""],
                                  ["--model", "m", "--device", "cpu", "--lengths", ","]])
def test_bench_lengths_that_name_no_length_are_refused(tmp_path, args):
    """The one-layer benchmark took `--lengths ,` for its default lengths, in silence."""
    _refused(["bench", *args, "--out", str(tmp_path / "out")], "--lengths: no length given")
    assert not (tmp_path / "out").exists()


def test_bench_times_a_length_given_twice_once():
    from slconvert.lengths import parse_lengths

    assert parse_lengths("16K,16384,32K") == [16384, 32768]


def test_lengths_are_read_and_written_with_binary_k_and_m():
    """K is 1024 and M is 1 << 20, in either case, blanks and empty parts skipped, the order kept; written back, a
    length takes the largest unit that divides it and stays a plain number otherwise."""
    from slconvert.lengths import parse_lengths, short_length

    assert parse_lengths("1k, 2K,,1m , 100") == [1024, 2048, 1 << 20, 100]
    assert [short_length(n) for n in (32768, 1 << 20, 3 << 20, 2048 << 10, 1536, 1000, 100)] == \
        ["32K", "1M", "3M", "2M", "1536", "1000", "100"]
    for text, needle in (("0", "0 must be positive"), ("-1K", "-1024 must be positive"), (" , ", "no length given"),
                         ("2G", "'2G' is not a length")):
        with pytest.raises(SlconvertError, match=f"^--sizes: {needle}; write e.g. 1K,2K$"):
            parse_lengths(text, "--sizes", "1K,2K")


def test_convert_force_replaces_a_checkpoint_only(tmp_path, model_dir):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    _refused(["convert", str(model_dir), str(notes), "--force"], "holds files but no checkpoint")
    assert (notes / "notes.txt").read_text() == "mine"
    _refused(["convert", str(model_dir), str(tmp_path), "--force"], "contains the source model")


def test_check_output_dir_allows_a_new_folder_beside_the_inputs(tmp_path, model_dir):
    check_output_dir(tmp_path / "a" / "b", {"MODEL": model_dir, "--compare": None})
    with pytest.raises(SlconvertError, match="parent directory does not exist"):
        check_output_dir(tmp_path / "a" / "b", {}, parent_must_exist=True)


def test_a_result_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "bench.json"
    write_text_atomically(target, "old")

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(SlconvertError, match=r"cannot write .*bench.json \(No space left on device\)"):
        write_text_atomically(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_a_failed_run_names_as_kept_only_the_results_it_finished(tmp_path, capsys):
    """A run into a folder that holds earlier files fails after finishing one result: the note names that result
    alone (the earlier files were never this run's to keep), the earlier files and the finished result stay, and
    what the run had begun is removed."""
    from slconvert.outputs import removed_on_failure

    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_text("{}")
    with pytest.raises(RuntimeError, match="the second mode failed"):
        with removed_on_failure(out, finished=lambda: [out / "earlier.json", out / "first.json"], then="rerun"):
            (out / "first.json").write_text("{}")
            (out / "second.partial").write_text("")
            raise RuntimeError("the second mode failed")
    assert sorted(p.name for p in out.iterdir()) == ["earlier.json", "first.json"]
    note = f"note: the results finished before the failure are kept in {out}: first.json; rerun\n"
    assert capsys.readouterr().err == note


def test_a_plot_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import matplotlib.figure

    from slconvert.evaluation.plots import niah_heatmap

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    table = {"task": "single", "lengths": [256], "depths": [0.0], "scores": [[100.0]], "average": 100.0}
    with pytest.raises(SlconvertError, match="No space left on device"):
        niah_heatmap(table, tmp_path / "niah_heatmap.png", "title")
    assert list(tmp_path.iterdir()) == []


def test_a_haystack_that_is_no_name_nor_text_is_named(tmp_path):
    eval_niah = ["eval", str(tmp_path / "missing-model"), "--niah", "--out", str(tmp_path / "out"), "--haystack"]
    _refused([*eval_niah, "bogus"], "pass builtin, noise, repeat, a text file")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    _refused([*eval_niah, str(binary)], "is not text (it holds NUL bytes)")


def _shown(stderr: str) -> list[str]:
    """stderr as a terminal shows it: of each line, what the last carriage return left."""
    return [line.rsplit("\r", 1)[-1] for line in stderr.rstrip("\n").split("\n")]


def _failing_bench(monkeypatch, write_first_step: bool):
    """`slconvert bench --quick` on a stand-in GPU whose benchmark fails at its second step, after writing its first
    step's partial result or not."""
    import torch

    import slconvert.benchmark
    import slconvert.benchmark.host

    def fails_on_the_second_step(cfg, progress, partial_result):
        progress("forward 16384")
        if write_first_step:
            partial_result({"rows": [{"length": 16384}], "complete": False})
        progress("decode 16384")
        raise SlconvertError("out of memory at 32768; pass --lengths without it")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(slconvert.benchmark.host, "device_name", lambda *_: "Test GPU")
    monkeypatch.setattr(slconvert.benchmark, "run_benchmark", fails_on_the_second_step)


def test_a_layer_bench_failing_before_its_first_result_ends_its_progress_line_and_removes_its_folder(
        tmp_path, monkeypatch):
    _failing_bench(monkeypatch, write_first_step=False)
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(tmp_path / "bench")])
    assert result.exit_code == 2
    assert _shown(result.stderr)[-1].startswith("error: out of memory at 32768"), repr(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_layer_bench_failing_after_a_result_keeps_the_results_so_far_marked_incomplete(tmp_path, monkeypatch):
    _failing_bench(monkeypatch, write_first_step=True)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", "--quick", "--out", str(out)])
    assert result.exit_code == 2
    shown = _shown(result.stderr)
    assert shown[-1].startswith("error: out of memory at 32768"), repr(result.stderr)
    assert shown[-2] == f"note: the results finished before the failure are kept in {out}: bench.json"
    kept = json.loads((out / "bench.json").read_text())
    assert kept["complete"] is False and kept["rows"] == [{"length": 16384}]


def test_a_model_bench_on_a_full_disk_ends_its_progress_line_and_keeps_what_was_there(tmp_path, monkeypatch):
    from slconvert.assets import TINY_CONVERTED

    out = tmp_path / "bench"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = CliRunner().invoke(main, ["bench", "--model", str(TINY_CONVERTED), "--lengths", "32", "--chunk", "32",
                                       "--decode-tokens", "1", "--no-compile", "--no-dense", "--device", "cpu",
                                       "--out", str(out)])
    monkeypatch.undo()
    assert result.exit_code == 2
    assert _shown(result.stderr)[-1].startswith("error: cannot write"), repr(result.stderr)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
