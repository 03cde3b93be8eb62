"""Bad input to the loading side (`slconvert.load`, `eval`, `train`, `bench --model`): one `error:` line, exit 2.

Covers converted outputs and source checkpoints whose tensors do not fit their config, malformed `superlinear`
blocks, devices this machine lacks, and model paths that are not paths.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import convert_cli
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import slconvert
from slconvert import loading
from slconvert.cli import main
from slconvert.devices import resolve_device
from slconvert.errors import SlconvertError
from slconvert.evaluation.models import load_eval_model
from slconvert.tiny import build_tiny_model
from slconvert.training.model_setup import load_dense

K_PROJ = "backbone.layers.1.mixer.k_proj.weight"  # [32, 64] in the tiny nemotron_h
O_PROJ = "backbone.layers.3.mixer.o_proj.weight"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("load_bad_input")
    source = build_tiny_model("nemotron_h", root / "source")
    converted = convert_cli(source, root / "converted")
    (root / "doc.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    return {"source": source, "converted": converted, "doc": root / "doc.txt"}


def _copy(pristine, tmp_path, which: str) -> Path:
    return Path(shutil.copytree(pristine[which], tmp_path / which))


def _edit_tensors(path: Path, edit) -> None:
    """Rewrite path/model.safetensors with `edit(tensors)` applied, keeping its metadata."""
    weights = path / "model.safetensors"
    with safe_open(weights, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights, metadata=metadata)


def _cut_k_proj(tensors):
    tensors[K_PROJ] = tensors[K_PROJ][:8].contiguous()


def _drop_o_proj(tensors):
    del tensors[O_PROJ]


def _edit_block(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def refused(args: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit 2 and one `error:` line on stderr holding every fragment, no traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- 3. weights that do not fit the config: one line from every loader ----------------------------------------

@pytest.fixture
def converted_cut(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "converted")
    _edit_tensors(path, _cut_k_proj)
    return path


@pytest.fixture
def source_missing(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "source")
    _edit_tensors(path, _drop_o_proj)
    return path


def test_load_refuses_a_misshapen_converted_tensor(converted_cut):
    with pytest.raises(SlconvertError, match=r"k_proj\.weight has shape \[8, 64\], but its config.json makes it "
                                             r"\[32, 64\]"):
        slconvert.load(converted_cut)


def test_load_refuses_a_converted_checkpoint_without_a_weight(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "converted")
    _edit_tensors(path, _drop_o_proj)
    with pytest.raises(SlconvertError, match=r"lacks tensor backbone\.layers\.3\.mixer\.o_proj\.weight "
                                             r"\(shape \[64, 64\]"):
        slconvert.load(path)


def test_eval_span_recall_of_a_misshapen_converted_checkpoint(converted_cut, tmp_path):
    refused(["eval", converted_cut, "--span-recall", "--device", "cpu", "--out", tmp_path / "out"],
            "k_proj.weight has shape [8, 64]", "[32, 64]")
    assert not (tmp_path / "out").exists()


def test_eval_of_a_source_checkpoint_missing_a_weight(source_missing, pristine, tmp_path):
    """It used to run on a randomly initialized o_proj (exit 0, transformers' MISSING report only)."""
    refused(["eval", source_missing, "--perplexity", pristine["doc"], "--device", "cpu", "--out", tmp_path / "out"],
            "lacks tensor backbone.layers.3.mixer.o_proj.weight")
    with pytest.raises(SlconvertError, match="lacks tensor"):
        load_eval_model(source_missing, device="cpu")


def test_eval_of_a_misshapen_source_checkpoint(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "source")
    _edit_tensors(path, _cut_k_proj)
    refused(["eval", path, "--perplexity", pristine["doc"], "--device", "cpu", "--out", tmp_path / "out"],
            f"tensor {K_PROJ} has shape [8, 64]")


def test_train_from_a_misshapen_converted_checkpoint(converted_cut, tmp_path):
    refused(["train", "recipes/router-warmup.yaml", "--model", converted_cut, "--output", tmp_path / "run", "--quiet",
             "max_steps=1", "seq_len=64", "batch_size=1"], "has shape [8, 64]")
    assert not (tmp_path / "run").exists()


def test_train_dense_from_a_checkpoint_missing_a_weight(source_missing, tmp_path):
    refused(["train", "recipes/conversion-study.yaml", "--model", source_missing, "--output", tmp_path / "run",
             "--quiet", "model_kind=dense", "trainable=all", "distill_weight=0", "data.niah_fraction=0",
             "max_steps=1", "seq_len=64", "batch_size=1", "micro_batch_size=1"], "lacks tensor")
    with pytest.raises(SlconvertError, match="lacks tensor backbone.layers.3.mixer.o_proj.weight"):
        load_dense(source_missing)


def test_a_misshapen_distillation_teacher(pristine, tmp_path):
    teacher = _copy(pristine, tmp_path, "source")
    _edit_tensors(teacher, _cut_k_proj)
    refused(["train", "recipes/conversion-study.yaml", "--model", pristine["converted"], "--output",
             tmp_path / "run", "--quiet", "distill_weight=1", f"distill_teacher={teacher}", "data.niah_fraction=0",
             "max_steps=1", "seq_len=64", "batch_size=1", "micro_batch_size=1"],
            str(teacher), "has shape [8, 64]")


def test_bench_model_of_a_misshapen_converted_checkpoint(converted_cut, tmp_path):
    refused(["bench", "--model", converted_cut, "--device", "cpu", "--lengths", "1K", "--out", tmp_path / "out"],
            "has shape [8, 64]")


def test_a_missing_weight_is_refused_before_transformers_loads_anything(source_missing, pristine, tmp_path, capfd):
    """The checkpoint is checked on the meta device first: the one line comes alone, not after transformers'
    "Loading weights" progress bar, and names the tensor as the file holds it (`backbone.`, not `model.`)."""
    result = CliRunner().invoke(main, ["eval", str(source_missing), "--perplexity", str(pristine["doc"]), "--device",
                                       "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.strip().splitlines() == [
        f"error: {source_missing}: lacks tensor {O_PROJ} (shape [64, 64]) that its config.json needs; the weights do "
        "not match config.json: re-save or re-download the checkpoint"]
    converted = _copy(pristine, tmp_path, "converted")
    _edit_tensors(converted, _drop_o_proj)
    capfd.readouterr()
    with pytest.raises(SlconvertError, match=f"lacks tensor {O_PROJ}"):
        slconvert.load(converted)
    assert "Loading weights" not in capfd.readouterr().err


def test_an_unused_weight_is_one_warning_line(pristine, tmp_path, capfd):
    """It used to be a Python warning (`/path/loading.py:290: UserWarning: ...`)."""
    import warnings

    path = _copy(pristine, tmp_path, "source")
    _edit_tensors(path, lambda tensors: tensors.__setitem__("backbone.extra.weight", torch.zeros(3)))
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dense(path)
    assert not [w for w in caught if "unused" in str(w.message)]
    lines = [line for line in capfd.readouterr().err.splitlines() if "unused" in line]
    assert lines == [f"warning: {path}: 1 unused weight(s), e.g. backbone.extra.weight"], lines


@pytest.fixture(scope="module")
def jamba_one_expert_cut(tmp_path_factory):
    """A MoE checkpoint whose per-expert tensors (stacked into one weight on loading) disagree in shape."""
    path = build_tiny_model("jamba", tmp_path_factory.mktemp("jamba") / "source")
    name = "model.layers.1.feed_forward.experts.0.gate_proj.weight"

    def cut(tensors):
        tensors[name] = tensors[name][:8].contiguous()

    _edit_tensors(path, cut)
    return path


def test_experts_that_cannot_be_stacked_are_one_line(jamba_one_expert_cut):
    """transformers raises a RuntimeError after its report ("see the CONVERSION entries above"); the line names
    the weight and torch's reason instead."""
    with pytest.raises(SlconvertError, match=r"experts\.gate_up_proj cannot be combined into it \(stack expects"):
        load_eval_model(jamba_one_expert_cut, device="cpu")


# --- 4. a malformed `superlinear` block ----------------------------------------------------------------------

BLOCKS = {
    "no layers": (lambda b: b.pop("layers"), "'superlinear.layers' is missing"),
    "no params": (lambda b: b.pop("params"), "'superlinear.params' is missing"),
    "layers text": (lambda b: b.__setitem__("layers", "1,3"), "'superlinear.layers' is '1,3', not a list"),
    "router null": (lambda b: b.__setitem__("router", None), "'superlinear.router' is null"),
    "format 99": (lambda b: b.__setitem__("format", 99), "'superlinear.format' is 99"),
    "bad params": (lambda b: b["params"].__setitem__("search_power", 2.0), "'superlinear.params' is invalid"),
    "layer out of range": (lambda b: b.__setitem__("layers", [1, 7]),
                           "'superlinear.layers' is [1, 7]: layer 7 is out of range; the model has layers 0..3"),
    "router tensor name": (lambda b: b["router"]["tensors"].__setitem__("1", "backbone.layers.1.mixer.router.weight"),
                           "lacks the router of converted layer 1 (backbone.layers.1.mixer.router.weight, the name "
                           "'superlinear.router.tensors' gives it)"),
    "router tensors layer": (lambda b: b["router"]["tensors"].__setitem__("one", "x"),
                             "'superlinear.router.tensors' names layer 'one', which 'superlinear.layers' [1, 3] does "
                             "not convert"),
    "router alpha text": (lambda b: b["router"].__setitem__("alpha", "x"),
                          "'superlinear.router.alpha' is 'x', not a map of converted layer to a number"),
    "router alpha of a layer": (lambda b: b["router"]["alpha"].__setitem__("3", "x"),
                                "'superlinear.router.alpha' gives layer 3 'x', not a number"),
}


@pytest.fixture
def blocks(pristine, tmp_path):
    def make(case: str) -> Path:
        path = Path(shutil.copytree(pristine["converted"], tmp_path / case.replace(" ", "_")))
        edit = BLOCKS[case][0]
        _edit_block(path, lambda config: edit(config["superlinear"]))
        return path

    return make


@pytest.mark.parametrize("case", sorted(BLOCKS))
def test_load_names_the_malformed_field(blocks, case):
    path = blocks(case)
    with pytest.raises(SlconvertError, match="slconvert convert") as caught:
        slconvert.load(path)
    assert BLOCKS[case][1] in str(caught.value) and str(path / "config.json") in str(caught.value)


def test_a_malformed_block_is_refused_before_transformers_loads_anything(blocks, capfd):
    for case in ("layer out of range", "router tensor name"):
        path = blocks(case)
        capfd.readouterr()
        with pytest.raises(SlconvertError, match="slconvert convert"):
            slconvert.load(path)
        assert "Loading weights" not in capfd.readouterr().err, case


@pytest.mark.parametrize("case", ["no layers", "router null", "layer out of range"])
def test_eval_train_and_bench_name_the_malformed_field(blocks, case, tmp_path):
    path = blocks(case)
    fragment = BLOCKS[case][1]
    refused(["eval", path, "--span-recall", "--device", "cpu", "--out", tmp_path / "out"], fragment)
    refused(["train", "recipes/router-warmup.yaml", "--model", path, "--output", tmp_path / "run", "--quiet",
             "max_steps=1"], fragment)
    refused(["bench", "--model", path, "--device", "cpu", "--lengths", "1K", "--out", tmp_path / "bench"], fragment)


def test_a_block_that_is_not_an_object(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "converted")
    _edit_block(path, lambda config: config.__setitem__("superlinear", "x"))
    refused(["inspect", path], "'superlinear' is 'x'", "slconvert convert")
    refused(["eval", path, "--span-recall", "--device", "cpu", "--out", tmp_path / "out"], "'superlinear' is 'x'")
    with pytest.raises(SlconvertError, match="'superlinear' is 'x'"):
        loading.is_converted(path)


def test_install_routers_checks_a_block_given_in_memory(pristine):
    model = slconvert.load(pristine["converted"])
    block = dict(model.config.superlinear, layers="1,3")
    with pytest.raises(SlconvertError, match="'superlinear.layers' is '1,3'"):
        loading.attach_superlinear(model, block)
    block = dict(model.config.superlinear, layers=[1, 7])
    with pytest.raises(SlconvertError, match=r"layer 7 is out of range; the model has layers 0\.\.3"):
        loading.attach_superlinear(model, block)


# --- 5. devices ------------------------------------------------------------------------------------------------

def test_eval_with_a_device_that_is_no_device(pristine, tmp_path):
    refused(["eval", pristine["converted"], "--span-recall", "--device", "bogus", "--out", tmp_path / "out"],
            "--device bogus is not a device", "cpu, cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the message shown without MPS")
def test_eval_on_mps_without_mps(pristine, tmp_path):
    refused(["eval", pristine["converted"], "--span-recall", "--device", "mps", "--out", tmp_path / "out"],
            "--device mps: MPS is not available", "use --device cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_load_on_cuda_without_a_gpu_is_refused_before_loading(pristine, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the device was checked")

    monkeypatch.setattr(loading, "load_pretrained", no_loading)
    with pytest.raises(SlconvertError, match=r"device='cuda': no CUDA device is visible .*use device='cpu'"):
        slconvert.load(pristine["converted"], device="cuda")
    with pytest.raises(SlconvertError, match="device='bogus' is not a device"):
        slconvert.load(pristine["converted"], device="bogus")


def test_resolve_device_checks_the_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device(None) == torch.device("cuda")
    with pytest.raises(SlconvertError, match=r"--device cuda:3: only 1 CUDA device\(s\) are visible \(cuda:0\)"):
        resolve_device("cuda:3")
    with pytest.raises(SlconvertError, match="--device meta: the meta device holds no weights"):
        resolve_device("meta")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu"), "device=") == torch.device("cpu")


def test_dtype_names_aliases_and_config_spellings():
    """The short names stand for their own dtype (fp16 is float16, not bfloat16); "auto" and None leave the choice to
    the loader; transformers 5's `dtype` wins over the older `torch_dtype` a config may still carry; a dtype the
    table lacks takes the caller's size per element."""
    from slconvert.dtypes import config_dtype, element_bytes, parse_dtype, resolve_dtype

    assert [parse_dtype(n) for n in ("fp32", "fp16", "bf16", "float64")] == [
        torch.float32, torch.float16, torch.bfloat16, torch.float64]
    with pytest.raises(SlconvertError, match="unknown dtype 'int8'; use one of auto, float32"):
        parse_dtype("int8", also=("auto",))
    assert [resolve_dtype(d) for d in (None, "auto", "fp16", torch.bfloat16)] == [None, None, torch.float16,
                                                                                  torch.bfloat16]
    assert config_dtype({"dtype": "bfloat16", "torch_dtype": "float32"}) == "bfloat16"
    assert config_dtype({"torch_dtype": "float16"}) == "float16" and config_dtype({}) is None
    assert [element_bytes(n, 4) for n in ("float16", "bfloat16", "float64", "float8_e4m3fn")] == [2, 2, 8, 4]


def test_a_device_index_past_the_last_one_and_a_flag_are_refused(monkeypatch):
    """With one GPU, cuda:0 is the last index (cuda:1 is refused); True is no device index; MPS has only mps:0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device(0) == torch.device("cuda:0")
    with pytest.raises(SlconvertError, match=r"--device cuda:1: only 1 CUDA device\(s\) are visible \(cuda:0\)"):
        resolve_device("cuda:1")
    with pytest.raises(SlconvertError, match=r"device=True is not a device \(bool\)"):
        resolve_device(True, "device=")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps:0") == torch.device("mps:0")
    with pytest.raises(SlconvertError, match=r"--device mps:1: there is one MPS device \(mps or mps:0\)"):
        resolve_device("mps:1")


# --- 6. a model path that is not a path -------------------------------------------------------------------------

@pytest.mark.parametrize("value, fragment", [(None, "not None"), (b"/tmp/model", "is bytes"), (3, "not int"),
                                             ("", "is empty")])
def test_load_of_something_that_is_not_a_path(value, fragment):
    with pytest.raises(SlconvertError, match=fragment):
        slconvert.load(value)
    with pytest.raises(SlconvertError, match=fragment):
        load_eval_model(value)


# --- 7. a config.json that is not JSON, given to train -------------------------------------------------------------

def test_train_names_the_json_error_not_a_missing_block(pristine, tmp_path):
    path = _copy(pristine, tmp_path, "converted")
    (path / "config.json").write_text('{"model_type": ')
    line = refused(["train", "recipes/router-warmup.yaml", "--model", path, "--output", tmp_path / "run", "--quiet"],
                   "config.json is not valid JSON")
    assert "not converted" not in line
    assert not loading.is_converted(tmp_path / "missing")  # no checkpoint there: not converted, no error


# --- 7b. sizes transformers takes but no model can have, edited into a converted config.json -------------------------

@pytest.mark.parametrize("field, value", [("vocab_size", -5), ("head_dim", 0), ("num_attention_heads", 0),
                                          ("vocab_size", "abc")])
def test_a_size_no_model_can_have_is_one_line_from_every_loader(pristine, tmp_path, field, value):
    """transformers' config accepted these; the model then failed deep inside (a negative tensor size, 0.0 to a
    negative power), with a traceback from load, eval, train and bench alike."""
    path = _copy(pristine, tmp_path, "converted")
    _edit_block(path, lambda config: config.__setitem__(field, value))
    fragment = f"{field} is {value}, not a positive integer" if isinstance(value, int) else field
    with pytest.raises(SlconvertError, match=fragment):
        slconvert.load(path)
    refused(["inspect", path], fragment)
    refused(["eval", path, "--niah", "--lengths", "64", "--device", "cpu", "--out", tmp_path / "out"], fragment)
    refused(["train", "recipes/router-warmup.yaml", "--model", path, "--output", tmp_path / "run", "--quiet",
             "max_steps=1"], fragment)
    refused(["bench", "--model", path, "--device", "cpu", "--lengths", "1K", "--out", tmp_path / "bench"], fragment)


# --- 8. a block edited by hand into one that contradicts the model or itself ------------------------------------------

@pytest.mark.parametrize("edit, fragment", [
    (lambda b: b.__setitem__("layers", [0, 1, 3]), "'superlinear.layers' is [0, 1, 3]: layer 0 is not softmax "
                                                   "attention; the model's attention layers are [1, 3]"),
    (lambda b: b.__setitem__("dense_attention_layers", [0]), "'superlinear.dense_attention_layers' is [0]: layer 0 "
                                                             "is not softmax attention"),
    (lambda b: b.__setitem__("dense_attention_layers", [1]), "'superlinear.dense_attention_layers' is [1], and "
                                                             "'superlinear.layers' [1, 3] converts layer 1 too"),
    (lambda b: b.__setitem__("window", 999), "'superlinear.window' is 999, but 'superlinear.params' give W = 15"),
    (lambda b: b["router"]["tensors"].__setitem__("1", "backbone.layers.3.mixer.superlinear_router.weight"),
     "'superlinear.router.tensors' gives layers 1, 3 the one tensor 'backbone.layers.3.mixer.superlinear_router"
     ".weight': each converted layer has its own router"),
])
def test_a_hand_edited_block_that_contradicts_itself_or_the_model(pristine, tmp_path, edit, fragment):
    """Each used to load (layer 3's router serving layer 1, a window the kernels never use) or, for inspect, show
    a conversion that is not there; the mamba layer was refused only as a missing router."""
    path = _copy(pristine, tmp_path, "converted")
    _edit_block(path, lambda config: edit(config["superlinear"]))
    with pytest.raises(SlconvertError, match="slconvert convert") as caught:
        slconvert.load(path)
    assert fragment in str(caught.value) and str(path / "config.json") in str(caught.value)
    refused(["inspect", path], fragment)
