"""Bad input to `slconvert convert` / `inspect` / `slconvert.load`: one-line error, exit code 2, nothing written."""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
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
        (["--num-spans", "1000000"], "num_spans=1000000 is out of range: use an integer from 1 to 4096"),
        (["--sw-index", "-1"], "sw_index"),
        (["--sw-index", "100000000000"], "sw_index=100000000000 is out of range: with search_power=0.55 its window"),
        (["--sw-index", "46340", "--search-power", "0.5"], "sw_index=46340 is out of range: with search_power=0.5"),
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
    line = refused([str(model), str(out), *SMALL, "--force"], "holds files but no checkpoint", tmp_path)
    assert "keep.txt" in line
    assert (out / "keep.txt").read_text() == "user data"  # --force replaces an earlier conversion only
    (out / "keep.txt").unlink()
    result = CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL, "--force"])  # an empty folder
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


def test_an_existing_out_is_refused_before_any_weight_is_written(model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def written(self, progress=None):
        raise AssertionError(f"{self.path.name} was written before OUT was refused")

    monkeypatch.setattr(SafetensorsWriter, "write", written)
    refused([str(model), str(out), *SMALL], "already exists; pass --force", tmp_path)


def test_force_replaces_an_earlier_conversion(model, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    written = sorted(p.name for p in out.iterdir())
    result = CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL, "--keep-dense", "3", "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == written
    assert json.loads((out / "config.json").read_text())["superlinear"]["layers"] == [1]


def _training_run(run: Path, converted: Path) -> Path:
    """A folder laid out like a training run: a model at its top, its checkpoints, metrics and recipe beside it."""
    shutil.copytree(converted, run)
    (run / "checkpoints" / "step-10").mkdir(parents=True)
    (run / "checkpoints" / "step-10" / "state.pt").write_bytes(b"optimizer state")
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 2.5}\n')
    (run / "recipe.yaml").write_text("max_steps: 10\n")
    return run


def test_force_never_replaces_a_training_run(model, tmp_path):
    """It used to delete the whole run: its config.json made it look like an earlier conversion."""
    first = tmp_path / "first"
    assert CliRunner().invoke(main, ["convert", str(model), str(first), *SMALL]).exit_code == 0
    run = _training_run(tmp_path / "run", first)
    digest = directory_digest(run)
    line = refused([str(model), str(run), *SMALL, "--force"], "checkpoints/, metrics.jsonl, recipe.yaml", tmp_path)
    assert "choose another OUT or remove" in line
    assert directory_digest(run) == digest


def test_force_keeps_files_the_user_added_to_a_conversion(model, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    (out / "notes.md").write_text("what I found")
    refused([str(model), str(out), *SMALL, "--force"], "holds notes.md, which `slconvert convert` did not write",
            tmp_path)
    assert (out / "notes.md").read_text() == "what I found"


@pytest.mark.parametrize("added", ["finetuned-step900.safetensors", "analyze_router.py", "LICENSE.mine"])
def test_force_keeps_an_added_file_named_like_one_convert_writes(model, tmp_path, added):
    """Names of the kinds a conversion writes (weights, a model's code, a licence) were taken for its own and
    deleted with it; the conversion lists what it wrote, and only that is replaced."""
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    assert "model.safetensors" in json.loads((out / "config.json").read_text())["superlinear"]["files"]
    (out / added).write_bytes(b"the user's own")
    digest = directory_digest(out)
    refused([str(model), str(out), *SMALL, "--force"], f"holds {added}, which `slconvert convert` did not write",
            tmp_path)
    assert directory_digest(out) == digest


def test_force_replaces_a_conversion_without_a_list_of_its_files_by_the_names_it_writes(model, tmp_path):
    """A conversion written before the block listed its files is judged by the names convert writes."""
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    del config["superlinear"]["files"]
    (out / "config.json").write_text(json.dumps(config))
    (out / "notes.md").write_text("what I found")
    refused([str(model), str(out), *SMALL, "--force"], "holds notes.md", tmp_path)
    (out / "notes.md").unlink()
    result = CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL, "--force"])
    assert result.exit_code == 0, result.output


def test_force_never_replaces_a_checkpoint_convert_did_not_write(model, tmp_path):
    """A plain model (its config.json has no `superlinear` block) holds only names convert writes, yet is no
    earlier conversion."""
    other = Path(shutil.copytree(model, tmp_path / "other"))
    digest = directory_digest(other)
    refused([str(model), str(other), *SMALL, "--force"], "no 'superlinear' block", tmp_path)
    assert directory_digest(other) == digest


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


# --- a damaged index of a sharded checkpoint -------------------------------------------------------------------

def _write_index(sharded: Path, edit) -> Path:
    index_path = sharded / "model.safetensors.index.json"
    edit(index_path)
    return index_path


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: p.write_bytes(bytes(range(200, 256)) * 5), "its bytes are not UTF-8 text"),
        (lambda p: p.write_text('{"weight_map": '), "not valid JSON: Expecting value at line 1"),
        (lambda p: p.write_text(json.dumps({"weight_map": {"backbone.embeddings.weight": 5}})),
         "'weight_map' maps 'backbone.embeddings.weight' to 5, not a file name"),
        (lambda p: p.write_text("[1, 2]"), "a JSON list, not an object"),
        (lambda p: p.write_text(json.dumps({"metadata": {}})), "no 'weight_map'"),
    ],
)
def test_damaged_index_is_one_line_naming_it(sharded, tmp_path, damage, fragment):
    index_path = _write_index(sharded, damage)
    for args, command in (([str(sharded), str(tmp_path / "out"), *SMALL], "convert"), ([str(sharded)], "inspect")):
        line = refused(args, fragment, tmp_path, command=command)
        assert f"{index_path} is not a valid safetensors index" in line


# --- tensors that do not fit the config: refused before anything is written ---------------------------------------

def _rewrite(model: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    edit(tensors)
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})


K_PROJ = "backbone.layers.1.mixer.k_proj.weight"  # [32, 64] in the tiny nemotron_h


def test_a_missing_tensor_is_refused(model, tmp_path):
    """Named as the file would hold it (nemotron_h's `backbone.`), not as transformers renames it (`model.`)."""
    _rewrite(model, lambda t: t.pop("backbone.layers.3.mixer.o_proj.weight"))
    line = refused([str(model), str(tmp_path / "out"), *SMALL], "lacks tensor backbone.layers.3.mixer.o_proj.weight "
                   "(shape [64, 64]) that its config.json needs", tmp_path)
    assert "other tensor" not in line


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8])
def test_integer_attention_projections_are_refused(model, tmp_path, dtype):
    """They used to be copied as they were (transformers then casts them to floats silently)."""
    _rewrite(model, lambda t: t.__setitem__(K_PROJ, t[K_PROJ].round().to(dtype)))
    refused([str(model), str(tmp_path / "out"), *SMALL], f"tensor {K_PROJ} is stored as "
            f"{'I32' if dtype == torch.int32 else 'I8'}, not as floating point", tmp_path)


def test_a_cut_tensor_is_refused_with_both_shapes_and_the_count_of_others(model, tmp_path):
    def cut(tensors):
        tensors[K_PROJ] = tensors[K_PROJ][:8].contiguous()
        del tensors["backbone.layers.3.mixer.o_proj.weight"]

    _rewrite(model, cut)
    refused([str(model), str(tmp_path / "out"), *SMALL],
            f"tensor {K_PROJ} has shape [8, 64], but its config.json makes it [32, 64] "
            "(1 other tensor missing or misshapen too)", tmp_path)


def test_a_header_shape_changed_at_the_same_byte_size_is_refused(model, tmp_path):
    """Only the declared shape differs: the file is a valid safetensors file, the header check alone sees it."""
    import struct

    weights = model / "model.safetensors"
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    header[K_PROJ]["shape"] = [16, 128]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])
    refused([str(model), str(tmp_path / "out"), *SMALL], f"{K_PROJ} has shape [16, 128], but its config.json makes "
            "it [32, 64]", tmp_path)


def test_experts_of_another_shape_are_refused(tmp_path):
    """Per-expert tensors that transformers stacks into one weight on loading: checked after that stacking."""
    source = build_tiny_model("jamba", tmp_path / "jamba")

    def cut(tensors):
        for name in list(tensors):
            if "layers.1.feed_forward.experts." in name and "gate_proj" in name:
                tensors[name] = tensors[name][:8].contiguous()

    _rewrite(source, cut)
    refused([str(source), str(tmp_path / "out"), *SMALL], "experts.gate_up_proj has shape [4, 136, 64], but its "
            "config.json makes it [4, 256, 64]", tmp_path)


def test_a_tied_output_embedding_may_be_absent(tmp_path):
    """tie_word_embeddings: the checkpoint holds the embedding once, and that is no missing tensor."""
    source = build_tiny_model("lfm2", tmp_path / "lfm2")
    config = json.loads((source / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (source / "config.json").write_text(json.dumps(config))
    _rewrite(source, lambda t: t.pop("lm_head.weight"))
    result = CliRunner().invoke(main, ["convert", str(source), str(tmp_path / "out"), *SMALL])
    assert result.exit_code == 0, result.output


# --- messages that say what is wrong ----------------------------------------------------------------------------------

def _with_config(model: Path, config) -> Path:
    (model / "config.json").unlink()
    config.save_pretrained(model)
    return model


def test_an_encoder_decoder_config_names_its_model_type(model, tmp_path):
    from transformers import T5Config

    _with_config(model, T5Config(num_layers=2, d_model=32, d_ff=64, num_heads=2, d_kv=16, vocab_size=100))
    line = refused([str(model), str(tmp_path / "out"), *SMALL], "model type 't5' has no causal language model",
                   tmp_path)
    assert "generic" not in line


def test_an_encoder_config_says_it_is_not_a_decoder_slconvert_converts(model, tmp_path):
    from transformers import BertConfig

    _with_config(model, BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                   vocab_size=100))
    line = refused([str(model), str(tmp_path / "out"), *SMALL], "model type 'bert' is not a model slconvert can "
                   "convert: its transformers model has no attention module at model.layers.{i}.self_attn", tmp_path)
    assert "no softmax attention layers" not in line


@pytest.mark.parametrize("change, fragment", [({"num_attention_heads": 0}, "num_attention_heads is 0"),
                                              ({"hidden_size": -64}, "hidden_size is -64")])
def test_an_invalid_config_says_so_with_the_reason(model, tmp_path, change, fragment):
    config = json.loads((model / "config.json").read_text())
    config.update(change)
    (model / "config.json").write_text(json.dumps(config))
    line = refused([str(model), str(tmp_path / "out"), *SMALL], "is invalid (", tmp_path)
    assert fragment in line and "supported:" not in line


@pytest.mark.parametrize("layers, fragment", [("3-1", "range '3-1' is reversed"), ("-1--3", "write -3--1"),
                                              ("1--3", "mixes a layer counted from the start")])
def test_a_reversed_or_mixed_layer_range_says_so(model, tmp_path, layers, fragment):
    line = refused([str(model), str(tmp_path / "out"), *SMALL, "--layers", layers], fragment, tmp_path)
    assert "no layer left" not in line


def test_layer_lists_and_ranges_include_both_ends():
    """'1,3,5-7' is [1, 3, 5, 6, 7]; a range counted from the end ('-3--1' of 10 layers) is the last three."""
    from slconvert.surgery.plan import parse_layer_list

    assert parse_layer_list("1,3,5-7", 10, "--layers") == [1, 3, 5, 6, 7]
    assert parse_layer_list("-3--1", 10, "--keep-dense") == [7, 8, 9]
    assert parse_layer_list("4-4", 10, "--layers") == [4]


def test_out_below_a_file(model, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused([str(model), str(tmp_path / "afile" / "out"), *SMALL], f"{tmp_path / 'afile'} is a file", tmp_path)


# --- a damaged `superlinear` block in the checkpoint given to convert or inspect -------------------------------

@pytest.mark.parametrize("edit, fragment", [
    (lambda b: b.__setitem__("layers", [1, 7]), "'superlinear.layers' is [1, 7]: layer 7 is out of range; the model "
                                                "has layers 0..3"),
    (lambda b: b.__setitem__("dense_attention_layers", [9]), "'superlinear.dense_attention_layers' is [9]: layer 9 "
                                                             "is out of range"),
    (lambda b: b["router"]["alpha"].__setitem__("1", "x"), "'superlinear.router.alpha' gives layer 1 'x', not a "
                                                           "number"),
    (lambda b: b["router"]["tensors"].__setitem__("7", "backbone.layers.7.mixer.superlinear_router.weight"),
     "'superlinear.router.tensors' names layer '7', which 'superlinear.layers' [1, 3] does not convert"),
])
def test_a_damaged_block_is_refused_by_convert_and_inspect(model, tmp_path, edit, fragment):
    first = tmp_path / "first"
    assert CliRunner().invoke(main, ["convert", str(model), str(first), *SMALL]).exit_code == 0
    config = json.loads((first / "config.json").read_text())
    edit(config["superlinear"])
    (first / "config.json").write_text(json.dumps(config))
    for args, command in (([str(first), str(tmp_path / "second"), *SMALL], "convert"), ([str(first)], "inspect")):
        line = refused(args, fragment, tmp_path, command=command)
        assert f"{first / 'config.json'}:" in line and "slconvert convert" in line


# --- the adversarial sweep: damage a user may meet, each one line naming it ----------------------------------------

@pytest.mark.parametrize("value", [["nemotron_h"], {"a": 1}])
def test_a_model_type_that_is_no_name(model, tmp_path, value):
    """It used to be a TypeError traceback (unhashable type)."""
    _edit_config(model, lambda c: c.__setitem__("model_type", value))
    for args, command in (([str(model), str(tmp_path / "out"), *SMALL], "convert"), ([str(model)], "inspect")):
        line = refused(args, f"config.json: 'model_type' is {value!r}, not a model type name", tmp_path,
                       command=command)
        assert "repair config.json" in line


def _edit_config(model: Path, edit) -> None:
    config = json.loads((model / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))


def _hybrid_pattern(pattern):
    def edit(config):
        config.pop("layers_block_type")
        config["hybrid_override_pattern"] = pattern
    return edit


@pytest.mark.parametrize("edit, fragment", [
    (_hybrid_pattern("M*X*"), "('X' is not a value it knows (a layer pattern letter, for one))"),
    (lambda c: c.__setitem__("hidden_size", "64"), "Field 'hidden_size' expected int, got str (value: '64')"),
])
def test_a_config_transformers_refuses_names_the_reason(model, tmp_path, edit, fragment):
    """It used to end at "('X')" or at "Validation error for field 'hidden_size':", the reason cut off."""
    _edit_config(model, edit)
    line = refused([str(model), str(tmp_path / "out"), *SMALL], "config.json cannot be read as a nemotron_h config",
                   tmp_path)
    assert fragment in line and line.endswith("fix config.json or re-download the checkpoint")


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.__setitem__("hidden_size", 10**12), "makes it [384, 1000000000000]"),
    (lambda c: c.__setitem__("vocab_size", 7), "makes it [7, 64]"),
    (lambda c: c.__setitem__("layers_block_type", None), "that its config.json needs"),  # transformers' default
])
def test_inspect_refuses_weights_that_do_not_fit_as_convert_does(model, tmp_path, edit, fragment):
    """inspect used to report the model config.json describes (exit 0) while convert refused its weights; with
    layers_block_type null convert named a missing query projection instead of the mismatch."""
    _edit_config(model, edit)
    for args, command in (([str(model), str(tmp_path / "out"), *SMALL], "convert"), ([str(model)], "inspect")):
        line = refused(args, fragment, tmp_path, command=command)
        assert "the weights do not match config.json" in line


def _edit_header(model: Path, edit) -> None:
    import struct

    weights = model / "model.safetensors"
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h[K_PROJ].__setitem__("shape", [-32, -64]), "has shape [-32, -64] and offsets"),
    (lambda h: h[K_PROJ].__setitem__("data_offsets", ["0", "8192"]), "offsets ['0', '8192'], which are not all "
                                                                     "whole numbers >= 0"),
    (lambda h: h[K_PROJ].__setitem__("dtype", ["F32"]), "has unsupported dtype ['F32']"),
    (lambda h: h.__setitem__("__metadata__", [1, 2]), "its '__metadata__' is not a map of strings"),
])
def test_a_damaged_header_entry_is_one_line(model, tmp_path, edit, fragment):
    """They used to be tracebacks (RuntimeError: negative dimension, TypeError on str offsets or a list of
    metadata), or for inspect an exit 0."""
    _edit_header(model, edit)
    for args, command in (([str(model), str(tmp_path / "out"), *SMALL], "convert"), ([str(model)], "inspect")):
        line = refused(args, fragment, tmp_path, command=command)
        assert "is not a valid safetensors file" in line


def test_a_tensor_in_two_shards_is_refused(sharded, tmp_path):
    """It used to convert, and the output index pointed the tensor at the other shard's copy."""
    from safetensors.torch import load_file, save_file

    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first, second = sorted(set(index["weight_map"].values()))[:2]
    held = load_file(sharded / first)
    name = next(iter(held))
    other = load_file(sharded / second)
    other[name] = torch.full_like(held[name], 7.0)
    save_file(other, sharded / second, metadata={"format": "pt"})
    for args, command in (([str(sharded), str(tmp_path / "out"), *SMALL], "convert"), ([str(sharded)], "inspect")):
        refused(args, f"tensor {name!r} is in both {first} and {second} of {sharded}; re-save the checkpoint so that "
                "each tensor is in one shard", tmp_path, command=command)


def test_a_lone_weight_file_of_another_name_converts_to_a_loadable_checkpoint(model, tmp_path):
    """The output kept the name (weights.safetensors), which transformers does not read: the conversion succeeded
    and its output could not be loaded."""
    (model / "model.safetensors").rename(model / "weights.safetensors")
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["convert", str(model), str(out), *SMALL]).exit_code == 0
    assert (out / "model.safetensors").is_file() and not (out / "weights.safetensors").exists()
    assert slconvert.load(out).config.superlinear["layers"] == [1, 3]


@pytest.mark.parametrize("layers, fragment", [
    ("1,,3", "--layers '1,,3' has an empty item"), ("3,", "--layers '3,' has an empty item"),
    (",", "--layers ',' has an empty item"), ("", "--layers is empty; give layer numbers, e.g. 3,7 or 4-9, or leave "
                                                  "--layers out"), (" ", "--layers is empty")])
def test_an_empty_layer_item_is_refused(model, tmp_path, layers, fragment):
    """'1,,3' used to pass as 1,3, an empty --layers as every layer, and ',' as 'no layer left'."""
    line = refused([str(model), str(tmp_path / "out"), *SMALL, "--layers", layers], fragment, tmp_path)
    assert "no layer left" not in line
    refused([str(model), "--keep-dense", layers], fragment.replace("--layers", "--keep-dense"), tmp_path,
            command="inspect")


def test_a_window_too_large_to_compute_is_one_line(model, tmp_path):
    """It used to be an OverflowError traceback."""
    for args, command in (([str(model), str(tmp_path / "out"), "--quiet"], "convert"), ([str(model)], "inspect")):
        refused([*args, "--search-power", "1e-9", "--sw-index", "3"], "sw_index=3 is out of range: with "
                "search_power=1e-09 its window is longer than 2147483647 keys (2^31 - 1), more than any context; use a "
                "smaller sw_index or a larger search_power", tmp_path, command=command)


def _cut_nemotron(config):
    config["layers_block_type"] = config["layers_block_type"][:3]


def _cut_bamba(config):
    config["num_hidden_layers"], config["attn_layer_indices"] = 3, [1]


@pytest.mark.parametrize("fixture, cut", [("model", _cut_nemotron), ("sharded", _cut_bamba)])
def test_a_config_describing_fewer_layers_than_the_weights_hold_is_refused(fixture, cut, request, tmp_path):
    """The fourth layer's tensors would be copied and never used: the converted model would be a shallower one."""
    source = request.getfixturevalue(fixture)
    _edit_config(source, cut)
    for command, args in (("convert", [str(source), str(tmp_path / "out"), *SMALL]), ("inspect", [str(source)])):
        line = refused(args, "config.json describes layers 0..2, but the checkpoint holds tensors of layers up to 3",
                       tmp_path, command)
        assert "fix the layer count or pattern in config.json" in line


@pytest.mark.parametrize("fixture, field", [("sharded", "num_hidden_layers"), ("model", "text_config")])
def test_a_layer_count_beyond_the_weights_is_refused_before_transformers_reads_it(fixture, field, request, tmp_path):
    """transformers builds one entry per declared layer while it reads a config: a count of 1e9 stalled every
    command for minutes before any check. The weights' headers say how many layers there are."""
    from slconvert.loading import load_pretrained

    source = request.getfixturevalue(fixture)
    count = 10**9

    def grow(config):
        if field == "text_config":  # a decoder's count in its text section, as multimodal configs keep it
            config["text_config"] = {"num_hidden_layers": count}
        else:
            config["num_hidden_layers"] = count

    _edit_config(source, grow)
    name = "text_config.num_hidden_layers" if field == "text_config" else "num_hidden_layers"
    fragment = f"config.json: {name} is 1,000,000,000, but the weights hold layers 0..3 only; fix {name}"
    for command, args in (("convert", [str(source), str(tmp_path / "out"), *SMALL]), ("inspect", [str(source)])):
        refused(args, fragment, tmp_path, command)
    with pytest.raises(SlconvertError, match=fragment.replace(".", r"\.")):
        load_pretrained(source)


def test_a_source_without_a_tokenizer_converts_with_a_note(model, tmp_path):
    """train and eval refuse a checkpoint without a tokenizer; the conversion said nothing of it."""
    assert CliRunner().invoke(main, ["convert", str(model), str(tmp_path / "with"), *SMALL]).stderr == ""
    for item in model.iterdir():
        if item.name.startswith("tokenizer") or item.name in ("vocab.json", "merges.txt"):
            item.unlink()
    result = CliRunner().invoke(main, ["convert", str(model), str(tmp_path / "without"), *SMALL])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: {model} holds no tokenizer, so neither does {tmp_path / 'without'}; train and "
                             "eval need one: save it there with tokenizer.save_pretrained\n")


def test_the_summary_line_names_the_layers_window_spans_and_search_key(model, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(model), str(out), "--sw-index", "3", "--num-spans", "3",
                                       "--search-power", "0.5", "--search-key", "span_mean", "--quiet"])
    assert result.exit_code == 0, result.output
    window = json.loads((out / "config.json").read_text())["superlinear"]["window"]
    assert result.stdout == f"converted layers [1, 3] of nemotron_h (W = {window}, k = 3, search key span_mean) -> {out}\n"


@pytest.mark.parametrize("seed, accepted", [(2**32 - 1, True), (2**32, False), (-1, False)])
def test_the_router_seed_is_a_32_bit_unsigned_integer(model, tmp_path, seed, accepted):
    args = [str(model), str(tmp_path / "out"), *SMALL, "--router-init", "random", "--seed", str(seed)]
    if accepted:
        assert CliRunner().invoke(main, ["convert", *args]).exit_code == 0
        assert json.loads((tmp_path / "out" / "config.json").read_text())["superlinear"]["router"]["seed"] == seed
    else:
        refused(args, f"Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295", tmp_path)
