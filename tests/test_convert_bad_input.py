"""Bad input to `slconvert convert` / `inspect` / `slconvert.load`: one-line error, exit code 2, nothing written."""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import slconvert
from slconvert.checkpoint import SafetensorsWriter, directory_digest
from slconvert.cli import main
from slconvert.errors import SlconvertError
from slconvert.tiny import build_tiny_model

SMALL = ["--sw-index", "3", "--search-power", "0.5", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    return {
        "single": build_tiny_model("nemotron_h", root / "single"),
        "sharded": build_tiny_model("bamba", root / "sharded", max_shard_size="60KB"),
    }


@pytest.fixture
def model(pristine, tmp_path):
    """A fresh, mutable copy of the single-file fixture inside this test's directory."""
    return Path(shutil.copytree(pristine["single"], tmp_path / "model"))


@pytest.fixture
def sharded(pristine, tmp_path):
    return Path(shutil.copytree(pristine["sharded"], tmp_path / "sharded"))


def refused(args: list[str], fragment: str, workdir: Path, command: str = "convert") -> str:
    """Run the CLI; assert exit 2, one `error:` line containing `fragment`, and no output left behind."""
    before = sorted(p.name for p in workdir.iterdir())
    result = CliRunner().invoke(main, [command, *args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    after = sorted(p.name for p in workdir.iterdir())
    assert after == before, f"something was written: {set(after) - set(before)}"
    return lines[0]


def test_missing_path_and_not_a_directory(tmp_path):
    refused([str(tmp_path / "nope"), str(tmp_path / "out")], "does not exist", tmp_path)
    (tmp_path / "file.txt").write_text("x")
    refused([str(tmp_path / "file.txt"), str(tmp_path / "out")], "not a directory", tmp_path)
    refused([str(tmp_path / "nope")], "does not exist", tmp_path, command="inspect")


def test_no_config_json(model, tmp_path):
    (model / "config.json").unlink()
    refused([str(model), str(tmp_path / "out")], "no config.json", tmp_path)
    (model / "config.json").write_text("{not json")
    refused([str(model), str(tmp_path / "out")], "not valid JSON", tmp_path)


@pytest.mark.parametrize(
    "model_type, fragment",
    [
        ("definitely_not_a_model", "unsupported architecture"),
        ("kimi_linear", "latent"),
        ("zamba2", "shared by several layers"),
        ("gpt_oss", "sinks"),
    ],
)
def test_unsupported_or_refused_architecture(model, tmp_path, model_type, fragment):
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(config))
    refused([str(model), str(tmp_path / "out")], fragment, tmp_path)
    refused([str(model)], fragment, tmp_path, command="inspect")


def test_no_attention_layers(tmp_path):
    source = build_tiny_model("nemotron_h", tmp_path / "mamba_only", layers="MEM")
    refused([str(source), str(tmp_path / "out")], "no softmax attention layers", tmp_path)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--layers", "9"], "out of range"),
        (["--layers", "-7"], "out of range"),
        (["--keep-dense", "4"], "out of range"),
        (["--layers", "0"], "not softmax attention"),
        (["--layers", "x"], "not a list of layer indices"),
        (["--layers", "1", "--keep-dense", "1"], "no layer left"),
    ],
)
def test_bad_layer_choice(model, tmp_path, extra, fragment):
    refused([str(model), str(tmp_path / "out"), *SMALL, *extra], fragment, tmp_path)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--search-power", "1.0"], "search_power"),
        (["--search-power", "0"], "search_power"),
        (["--span-power", "1.5"], "span_power"),
        (["--num-spans", "0"], "num_spans"),
        (["--sw-index", "-1"], "sw_index"),
        (["--backward-factor", "-1"], "backward_factor"),
        (["--forward-factor", "nan"], "forward_factor"),
    ],
)
def test_out_of_range_parameters(model, tmp_path, extra, fragment):
    line = refused([str(model), str(tmp_path / "out"), "--quiet", *extra], fragment, tmp_path)
    assert "out of range" in line
    refused([str(model), *extra], fragment, tmp_path, command="inspect")


def test_truncated_safetensors(model, tmp_path):
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    refused([str(model), str(tmp_path / "out"), *SMALL], "truncated", tmp_path)
    weights.write_bytes(data[:4])
    refused([str(model), str(tmp_path / "out"), *SMALL], "truncated", tmp_path)


def test_corrupt_safetensors_header(model, tmp_path):
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))
    refused([str(model), str(tmp_path / "out"), *SMALL], "not a valid safetensors file", tmp_path)


def test_index_names_missing_shard(sharded, tmp_path):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    (sharded / shards[-1]).unlink()
    refused([str(sharded), str(tmp_path / "out"), *SMALL], f"names shard '{shards[-1]}', which is missing", tmp_path)


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_only_checkpoint_is_never_unpickled(model, tmp_path):
    marker = tmp_path / "unpickled.marker"
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    refused([str(model), str(tmp_path / "out"), *SMALL], "pickle", tmp_path)
    with pytest.raises(SlconvertError, match="pickle"):
        slconvert.load(model)
    assert not marker.exists()


def test_out_inside_model_and_model_inside_out(model, tmp_path):
    digest = directory_digest(model)
    refused([str(model), str(model / "converted"), *SMALL], "inside the source model", tmp_path)
    refused([str(model), str(model), *SMALL, "--force"], "inside the source model", tmp_path)
    refused([str(model), str(tmp_path), *SMALL, "--force"], "contains the source model", tmp_path)
    assert directory_digest(model) == digest


def test_existing_out_needs_force(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    refused([str(model), str(out), *SMALL], "--force", tmp_path)
    assert (out / "keep.txt").read_text() == "user data"
    result = CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL, "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


def test_disk_full_while_writing_leaves_nothing(model, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = SafetensorsWriter._write

    def failing_write(self, out, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, out, data)

    monkeypatch.setattr(SafetensorsWriter, "_write", failing_write)
    refused([str(model), str(tmp_path / "out"), *SMALL], "disk full", tmp_path)
    assert calls["n"] > 3


def test_already_converted_source_is_refused(model, tmp_path):
    first = tmp_path / "first"
    assert CliRunner().invoke(main, ["convert", str(model), str(first), *SMALL]).exit_code == 0
    refused([str(first), str(tmp_path / "second"), *SMALL], "already converted", tmp_path)


def test_load_refuses_unconverted_and_missing(model, tmp_path):
    with pytest.raises(SlconvertError, match="not a Superlinear checkpoint"):
        slconvert.load(model)
    with pytest.raises(SlconvertError, match="does not exist"):
        slconvert.load(tmp_path / "missing")
    assert not slconvert.loading.is_converted(model)
    assert not slconvert.loading.is_converted(tmp_path / "missing")


def test_load_refuses_checkpoint_without_its_router(model, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    tensors = {k: v for k, v in tensors.items() if "layers.1.mixer.superlinear_router" not in k}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SlconvertError, match="lacks the router of converted layer 1"):
        slconvert.load(out)
