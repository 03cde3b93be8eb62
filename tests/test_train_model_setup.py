"""Parameter dtypes for training: float32 masters under bf16 autocast, one dtype for FSDP."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from slconvert.tiny import build_tiny_model
from slconvert.training.model_setup import set_training_dtypes


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


def test_sharded_model_has_one_dtype(tmp_path):
    model = _bf16_model(tmp_path)
    set_training_dtypes(model, sharded=True, autocast_bf16=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
