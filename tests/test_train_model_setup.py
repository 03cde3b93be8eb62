"""Getting a model ready for training: float32 masters under bf16 autocast (sharded or not), whether DDP must
search for parameters without a gradient, what FSDP launches are given, and FSDP's loading on the main process
alone (the other processes build the model on the meta device without reading a weight)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from fsdp_cpu_worker import fsdp_launch_env, no_weight_reads
from safetensors.torch import load_file
from slkernels import SuperlinearConfig
from test_train_helpers import converted
from transformers import AutoModelForCausalLM

import slconvert
from slconvert.errors import SlconvertError
from slconvert.loading import read_block
from slconvert.router import ROUTER_ATTRIBUTE, routers
from slconvert.tiny import build_tiny_model
from slconvert.training import load_recipe
from slconvert.training.model_setup import (
    check_same_model,
    fsdp_launch,
    fsdp_plugin,
    give_optimizer_shards,
    load_dense,
    main_process_loading,
    model_layout,
    needs_unused_parameter_search,
    reads_weights,
    set_training_dtypes,
    training_model,
)
from slconvert.training.trainable import apply_lora, select_trainable

REPO = Path(__file__).resolve().parent.parent


def _bf16_model(tmp_path):
    path = build_tiny_model("nemotron_h", tmp_path / "m", layers="MEA")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    for name, param in model.named_parameters():
        param.requires_grad_("mixer.q_proj" in name or "mixer.o_proj" in name)
    return model


def test_autocast_keeps_frozen_weights_and_upcasts_trainable(tmp_path):
    model = _bf16_model(tmp_path)
    before = {name: p.dtype for name, p in model.named_parameters()}
    assert torch.bfloat16 in {before[n] for n, p in model.named_parameters() if p.requires_grad}
    set_training_dtypes(model, sharded=False, autocast_bf16=True)
    for name, param in model.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else before[name]), name
    assert torch.bfloat16 in {p.dtype for p in model.parameters()}  # frozen bf16 weights stay bf16


def test_auto_precision_is_bf16_only_on_a_gpu_that_has_it(monkeypatch):
    """precision: auto autocasts in bf16 on a GPU that supports it and runs in float32 anywhere else (the CPU
    included); bf16 and fp32 are what they say. The autocast of "bf16" computes in bfloat16, that of "no" in the
    weights' own dtype."""
    from slconvert.training.model_setup import autocast, precision
    from slconvert.training.recipe import Recipe

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [precision(Recipe(precision=p), cpu) for p in ("auto", "bf16", "fp32")] == ["no", "bf16", "no"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert [precision(Recipe(precision=p), gpu) for p in ("auto", "bf16", "fp32")] == ["no", "bf16", "no"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert [precision(Recipe(precision=p), gpu) for p in ("auto", "bf16", "fp32")] == ["bf16", "bf16", "no"]
    a = torch.ones(2, 2)
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu, "no"):
        assert (a @ a).dtype == torch.float32


def test_the_layout_processes_compare_tells_a_saved_buffer_from_one_left_out_of_the_state_dict():
    """A buffer's place in the state dict is part of what every process must agree on (the main process's state dict
    is broadcast entry by entry): the same buffer registered persistent on one process and not on another differs."""
    saved, scratch = torch.nn.Module(), torch.nn.Module()
    saved.register_buffer("bias", torch.zeros(3))
    scratch.register_buffer("bias", torch.zeros(3), persistent=False)
    assert model_layout(saved) == [("buffer", "bias", (3,), "torch.float32", True)]
    assert model_layout(scratch) == [("buffer", "bias", (3,), "torch.float32", False)]


def test_sharded_bf16_keeps_frozen_weights_and_upcasts_trainable(tmp_path):
    """FSDP2 shards parameter by parameter: under bf16 the dtypes are those of the unsharded run."""
    model = _bf16_model(tmp_path)
    before = {name: p.dtype for name, p in model.named_parameters()}
    set_training_dtypes(model, sharded=True, autocast_bf16=True)
    for name, param in model.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else before[name]), name


def test_sharded_without_bf16_has_one_dtype(tmp_path):
    model = _bf16_model(tmp_path)
    set_training_dtypes(model, sharded=True, autocast_bf16=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def _missing_gradients(model, seq_len: int) -> set[str]:
    """Trainable parameters that one next-token backward at `seq_len` tokens leaves without a gradient."""
    model.zero_grad(set_to_none=True)
    ids = torch.randint(4, 300, (1, seq_len), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, use_cache=False).logits.float().logsumexp(-1).mean().backward()
    return {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}


def test_unused_parameter_search_only_where_a_trainable_parameter_can_miss_its_gradient():
    path = converted("granitemoehybrid", layers="MAMA")
    window = SuperlinearConfig.from_dict(read_block(path)["params"]).window
    model = slconvert.load(path).train()
    long = load_recipe("recipes/niah-curriculum.yaml", ["curriculum=[]", f"seq_len={window + 1}"])
    short = load_recipe("recipes/niah-curriculum.yaml", [
        "max_steps=4", f"curriculum=[{{seq_len: {window}, steps: 2}}, {{seq_len: 320, steps: 2}}]"])
    no_forward = load_recipe("recipes/router-warmup.yaml", [f"seq_len={window}"])
    routers = {name for name, _ in model.named_parameters() if ROUTER_ATTRIBUTE in name}

    select_trainable(model, "mixers")  # routers, attention projections, Mamba-2 mixers
    assert not needs_unused_parameter_search(model, long, window)
    assert not _missing_gradients(model, window + 1)  # the last query has a candidate span: the gate is in the graph
    assert needs_unused_parameter_search(model, short, window)
    assert _missing_gradients(model, window) == routers  # no query picks a span: no gate, no router gradient
    assert not needs_unused_parameter_search(model, no_forward, window)  # no next-token loss: DDP runs no forward

    select_trainable(model, ["*.mamba.*", "*.q_proj.*"])
    assert not needs_unused_parameter_search(model, short, window)
    assert not _missing_gradients(model, window)


def test_fsdp_launches_get_fsdp2_with_bf16_compute_and_float32_reduction(monkeypatch):
    config = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    monkeypatch.setenv("FSDP_VERSION", "2")
    plugin = fsdp_plugin("bf16")
    policy = plugin.mixed_precision_policy
    assert plugin.fsdp_version == 2
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert fsdp_plugin("no").mixed_precision_policy is None  # float32 compute: the model is float32
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(SlconvertError, match="fsdp_version: 2"):
        fsdp_plugin("bf16")


def _launched_as(monkeypatch, rank: int) -> None:
    """The environment of process `rank` of two under that launch (torchrun sets the ranks)."""
    for key, value in fsdp_launch_env().items():
        monkeypatch.setenv(key, value)
    for key, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": 2, "LOCAL_WORLD_SIZE": 2}.items():
        monkeypatch.setenv(key, str(value))


@pytest.fixture
def process_group():
    """An initialized torch.distributed, as in a launched process (transformers looks at it beside LOCAL_RANK,
    ACCELERATE_USE_FSDP and FSDP_CPU_RAM_EFFICIENT_LOADING); one process, so nothing waits on another."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fsdp_launch_config_has_the_main_process_load_alone(monkeypatch):
    env = fsdp_launch_env()
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    _launched_as(monkeypatch, 1)
    assert fsdp_launch()
    plugin = fsdp_plugin("bf16")
    assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading and main_process_loading(plugin)
    assert reads_weights(plugin, 0) and not reads_weights(plugin, 1) and not reads_weights(plugin, 3)
    # every process loads without the option, and under DDP or in one process (no plugin)
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    assert not main_process_loading(fsdp_plugin("bf16")) and reads_weights(fsdp_plugin("bf16"), 1)
    assert not main_process_loading(None) and reads_weights(None, 1)


def _router_in_file(stored: dict, layer: int):
    return next(t for n, t in stored.items() if ROUTER_ATTRIBUTE in n and f"layers.{layer}." in n)


@pytest.mark.parametrize("model_type", ["nemotron_h", "bamba"])
def test_under_fsdp_only_the_main_process_reads_the_weights(model_type, monkeypatch, process_group):
    """Rank 0 loads the checkpoint; rank 1 builds the same model on the meta device, routers included, without
    reading a weight, with the buffers the main process does not send (rotary frequencies) computed as rank 0
    has them, and after the training dtype setup (frozen bf16 beside float32 masters) the same layout, which
    is what the broadcast of rank 0's weights into the shards relies on."""
    path = converted(model_type, layers="MAEA" if model_type == "nemotron_h" else "MAMA", dtype="BF16")
    stored = load_file(path / "model.safetensors")

    _launched_as(monkeypatch, 0)
    plugin = fsdp_plugin("bf16")
    main = training_model(path, "converted", weights=reads_weights(plugin, 0))
    assert {p.device.type for p in main.parameters()} == {"cpu"}
    assert routers(main) and all(torch.equal(r.weight, _router_in_file(stored, i)) for i, r in routers(main).items())

    _launched_as(monkeypatch, 1)
    plugin = fsdp_plugin("bf16")
    with no_weight_reads():
        other = training_model(path, "converted", weights=reads_weights(plugin, 1))
    assert {p.device.type for p in other.parameters()} == {"meta"}
    assert routers(other).keys() == routers(main).keys()
    assert all(r.weight.is_meta for r in routers(other).values())
    assert other.config.superlinear == main.config.superlinear
    assert {b.device.type for b in other.buffers()} <= {"cpu"}
    kept = dict(main.named_non_persistent_buffers())
    assert kept.keys() == dict(other.named_non_persistent_buffers()).keys()
    assert all(torch.equal(buffer, other.get_buffer(name)) for name, buffer in kept.items())
    if model_type == "bamba":
        assert any("inv_freq" in name for name in kept)

    for model in (main, other):
        select_trainable(model, "attention")
        set_training_dtypes(model, sharded=True, autocast_bf16=True)
    assert model_layout(other) == model_layout(main)
    assert {p.dtype for p in main.parameters()} == {torch.bfloat16, torch.float32}
    lora = load_recipe("recipes/niah-curriculum.yaml", ["trainable=lora"]).lora
    assert model_layout(apply_lora(other, lora)) == model_layout(apply_lora(main, lora))


def test_a_dense_checkpoint_builds_without_weights_too(tmp_path):
    path = build_tiny_model("nemotron_h", tmp_path / "m", layers="MEA")
    with no_weight_reads():
        empty = training_model(path, "dense", weights=False)
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    assert model_layout(empty) == model_layout(load_dense(path))


def test_processes_that_built_different_models_stop_with_one_line(monkeypatch):
    main, other = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16)

    def gather(layouts, mine):
        layouts[:] = [model_layout(main), model_layout(other)]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *args: 2)
    monkeypatch.setattr(dist, "all_gather_object", gather)
    with pytest.raises(SlconvertError, match=r"process 1 built a different model than the main process .*weight.*"
                                             r"torch.bfloat16.*same checkpoint with the same recipe"):
        check_same_model(other)
    monkeypatch.setattr(dist, "all_gather_object", lambda layouts, mine: layouts.__setitem__(
        slice(None), [model_layout(main)] * 2))
    check_same_model(main)


def test_the_optimizer_gets_the_shards_of_a_model_built_on_the_meta_device():
    """accelerate pairs optimizer entries with shards by storage address, and every meta tensor has address 0:
    all entries end on one shard. `give_optimizer_shards` gives each its own, in the model's order."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[1].requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {p.data_ptr() for p in trainable} == {0}
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    optimizer.param_groups[0]["params"] = [trainable[-1]] * len(trainable)  # what the address match leaves
    give_optimizer_shards(optimizer, model)
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], trainable, strict=True))
    optimizer.add_param_group({"params": [model[1].weight]})
    with pytest.raises(SlconvertError, match="2 group"):
        give_optimizer_shards(optimizer, model)
    # an optimizer that has stepped holds state per parameter, which the shards would not carry: refused too
    stepped = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(stepped.parameters(), lr=1e-3)
    stepped(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    with pytest.raises(SlconvertError, match="the optimizer holds 2 parameters in 1 group"):
        give_optimizer_shards(optimizer, stepped)


def test_the_distillation_teacher_is_frozen_in_its_stored_dtype_and_must_share_the_vocabulary(tmp_path):
    """`distill_teacher` loads the dense teacher frozen and in eval mode, in the 16-bit dtype its config.json names
    (float32 otherwise); a teacher over another vocabulary is refused in one line, as is FSDP."""
    from slconvert.tiny import build_tiny_model
    from slconvert.training.model_setup import distill_teacher

    model = slconvert.load(converted("granitemoehybrid", layers="MAMA"))
    vocab = model.get_output_embeddings().weight.shape[0]
    plain = build_tiny_model("granitemoehybrid", tmp_path / "plain", layers="MAMA", vocab=vocab)
    teacher = distill_teacher(plain, model, torch.device("cpu"), sharded=False)
    assert not teacher.training and all(not p.requires_grad and p.dtype == torch.float32 for p in teacher.parameters())
    for dtype in (torch.bfloat16, torch.float16):
        half = build_tiny_model("granitemoehybrid", tmp_path / str(dtype), layers="MAMA", vocab=vocab, dtype=dtype)
        assert {p.dtype for p in distill_teacher(half, model, torch.device("cpu"), sharded=False).parameters()} == {
            dtype}
    other = build_tiny_model("granitemoehybrid", tmp_path / "other", layers="MAMA", vocab=vocab + 64)
    with pytest.raises(SlconvertError, match=f"predicts {vocab + 64} tokens and the model {vocab}"):
        distill_teacher(other, model, torch.device("cpu"), sharded=False)
    with pytest.raises(SlconvertError, match="FSDP"):
        distill_teacher(plain, model, torch.device("cpu"), sharded=True)


def test_a_distillation_teacher_with_another_tokenizer_of_the_same_size_is_refused(tmp_path):
    """Only the vocabulary sizes were compared: a teacher whose ids name other tokens trained the model silently."""
    from transformers import AutoTokenizer

    from slconvert.training.model_setup import check_teacher_tokenizer

    path = converted("granitemoehybrid", layers="MAMA")
    tokenizer = AutoTokenizer.from_pretrained(path)
    same = Path(shutil.copytree(path, tmp_path / "same"))
    check_teacher_tokenizer(same, tokenizer)
    other = Path(shutil.copytree(path, tmp_path / "other"))
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]  # two ordinary tokens trade ids: same size, other ids
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(SlconvertError, match=f"the distillation teacher {other} has another tokenizer than the model"):
        check_teacher_tokenizer(other, tokenizer)
    for item in other.glob("tokenizer*"):  # a teacher without a tokenizer: the sizes are checked once it loads
        item.unlink()
    check_teacher_tokenizer(other, tokenizer)
