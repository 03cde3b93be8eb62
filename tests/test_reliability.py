"""First contact and interrupted runs: one safe loading path, clean-up after SIGTERM and SIGKILL, outputs that
follow the umask, converted folders that carry only model files, training that explains itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import SMALL, convert_cli
from click.testing import CliRunner
from test_train_helpers import converted

from slconvert.cli import main
from slconvert.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output


def _one_error_line(code, output, *words):
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert lines and lines[-1].startswith("error:") and "Traceback" not in output, output
    for word in words:
        assert word in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_tiny_model("nemotron_h", tmp_path_factory.mktemp("reliability") / "source")


def _pickle_only(tmp_path, source) -> Path:
    folder = tmp_path / "pickled"
    shutil.copytree(source, folder)
    tensors = {}
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")
    return folder


def _truncated(tmp_path, source) -> Path:
    folder = tmp_path / "truncated"
    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 1000)
    return folder


@pytest.mark.parametrize("damage", ["pickle", "truncated"])
def test_every_entry_point_refuses_unsafe_or_damaged_weights(damage, source, tmp_path):
    bad = (_pickle_only if damage == "pickle" else _truncated)(tmp_path, source)
    word = "pickle" if damage == "pickle" else "truncated"
    conv = convert_cli(source, tmp_path / "converted")
    out = tmp_path / "eval"
    _one_error_line(*_invoke(["eval", str(bad), "--niah", "--lengths", "64", "--out", str(out)]), word)
    _one_error_line(*_invoke(["eval", str(conv), "--niah", "--lengths", "64", "--compare", str(bad),
                              "--out", str(out)]), word)
    assert not out.exists()  # nothing was evaluated, so no folder is left
    _one_error_line(*_invoke(["inspect", str(bad), *SMALL]), word)
    _one_error_line(*_invoke(["convert", str(bad), str(tmp_path / "c2"), *SMALL, "--quiet"]), word)
    _one_error_line(*_invoke(["train", "recipes/tiny-teacher.yaml", "--model", str(bad), "--output",
                              str(tmp_path / "run"), "max_steps=1", "curriculum=[]", "seq_len=300"]), word)


def test_a_failed_evaluation_leaves_no_output_folder(source, tmp_path):
    out = tmp_path / "eval"
    _one_error_line(*_invoke(["eval", str(source), "--niah", "--lengths", "4500", "--out", str(out)]), "fit")
    assert not out.exists()
    # lm-eval's own spelling of the metadata option is accepted
    _one_error_line(*_invoke(["eval", str(source), "--tasks", "slc_passkey", "--metadata", "[1]",
                              "--out", str(out)]), "JSON object")


def test_sigterm_removes_the_partial_output(source, tmp_path):
    out = tmp_path / "converted"
    code = f"""
import sys, time
from slconvert import checkpoint
written = checkpoint.SafetensorsWriter.write
def slow(self, progress=None):
    written(self, progress)
    print("written", flush=True)
    time.sleep(120)
checkpoint.SafetensorsWriter.write = slow
from slconvert.cli import main
main(["convert", {str(source)!r}, {str(out)!r}, "--sw-index", "3", "--search-power", "0.5", "--span-power", "0.5", "--quiet"])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    assert list(tmp_path.glob(".converted.partial-*"))  # the conversion is under way
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".converted.partial-*")) and not out.exists()


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_killed_runs_partial_folder_is_removed_by_the_next_run(source, tmp_path):
    stale = tmp_path / f".converted.partial-{_dead_pid()}-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    live = tmp_path / ".converted.partial-1-efgh"  # pid 1 is alive: another run may be writing it
    live.mkdir()
    result = CliRunner().invoke(main, ["convert", str(source), str(tmp_path / "converted"), *SMALL, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and live.exists()
    assert f"removed {stale}" in result.output


def test_outputs_follow_the_umask(source, tmp_path):
    previous = os.umask(0o022)
    try:
        out = convert_cli(source, tmp_path / "converted")
        from slconvert.training import Trainer, load_recipe

        recipe = load_recipe("recipes/demo-curriculum.yaml", ["max_steps=1", "seq_len=288", "batch_size=1",
                                                              "micro_batch_size=1"])
        Trainer(recipe, out, tmp_path / "run", progress=False).run()
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o755
    for folder in (out, tmp_path / "run"):
        for item in folder.iterdir():
            if item.is_file():
                assert item.stat().st_mode & 0o777 == 0o644, item


def test_convert_carries_only_model_files(source, tmp_path):
    src = tmp_path / "source"
    shutil.copytree(source, src)
    for name in ("niah_eval.json", "niah_heatmap.png", "training.jsonl", "training_summary.json", "recipe.yaml"):
        (src / name).write_text("{}")
    (src / "chat_template.jinja").write_text("{{ messages }}")
    (src / "spiece.model").write_bytes(b"sentencepiece")  # a sentencepiece tokenizer (T5's name): carried
    (src / ".scratch.py").write_text("# an editor's hidden file, named like carried code: never carried")
    out = convert_cli(src, tmp_path / "converted")
    names = {p.name for p in out.iterdir()}
    assert not names & {"niah_eval.json", "niah_heatmap.png", "training.jsonl", "training_summary.json", "recipe.yaml",
                        ".scratch.py"}
    assert {"tokenizer.json", "generation_config.json", "chat_template.jinja", "README.md", "config.json",
            "spiece.model"} <= names


def test_training_explains_itself(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(converted("granitemoehybrid", layers="MAMA"), model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (model / "config.json").write_text(json.dumps(config))
    from slconvert.training import Trainer, load_recipe

    recipe = load_recipe("recipes/niah-curriculum.yaml", ["max_steps=3", "curriculum=[]", "seq_len=96",
                                                          "batch_size=1", "recall_rows=0", "log_every=2",
                                                          "data.niah_fraction=0", "gradient_checkpointing=false"])
    started = time.perf_counter()
    Trainer(recipe, model, tmp_path / "run", progress=False).run()
    err = capsys.readouterr().err
    assert "warning: seq_len 96 exceeds the model's max_position_embeddings 64" in err
    assert "training steps 1-3 of 1 x 96 tokens" in err
    assert "step 1/3" in err and "step 3/3" in err and "eta" in err
    assert time.perf_counter() - started < 120
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line and "event" not in line]
    assert [line["step"] for line in steps] == [2, 3]
    assert all("loss_smooth" in line for line in steps)
