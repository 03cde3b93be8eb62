"""Getting a model ready for training: float32 masters under bf16 autocast (sharded or not), whether DDP must
search for parameters without a gradient, what FSDP launches are given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from slkernels import SuperlinearConfig
from test_train_helpers import converted
from transformers import AutoModelForCausalLM

import slconvert
from slconvert.errors import SlconvertError
from slconvert.loading import read_block
from slconvert.router import ROUTER_ATTRIBUTE
from slconvert.tiny import build_tiny_model
from slconvert.training import load_recipe
from slconvert.training.model_setup import fsdp_plugin, needs_unused_parameter_search, set_training_dtypes
from slconvert.training.trainable import select_trainable

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
