"""Getting a loaded model ready for training: precision, parameter dtypes, activation checkpointing."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SlconvertError

__all__ = ["precision", "load_dense", "set_training_dtypes", "enable_checkpointing"]


def precision(recipe, device: torch.device) -> str:
    """accelerate's mixed_precision for the recipe: bf16 autocast where the GPU has it under `auto`."""
    if recipe.precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if recipe.precision == "bf16" else "no"


def load_dense(path: Path):
    """A plain checkpoint (model_kind: dense) in float32, as transformers loads it: every layer stays dense."""
    from transformers import AutoModelForCausalLM

    from ..checkpoint import check_checkpoint

    check_checkpoint(path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                    trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise SlconvertError(f"cannot load {path} as a causal language model ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}); pass a checkpoint directory") from None


def set_training_dtypes(model, *, sharded: bool, autocast_bf16: bool) -> None:
    """Trainable weights become float32 masters under bf16 autocast; frozen ones keep the checkpoint's dtype.

    `sharded` (FSDP): FSDP flattens each decoder layer into one tensor, which needs a single dtype, so
    frozen bf16 weights next to float32 masters would be refused; the whole sharded model is float32.
    """
    if sharded:
        model.float()
        return
    if autocast_bf16:
        for param in model.parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()


def enable_checkpointing(model) -> None:
    """Recompute layer activations in the backward (non-reentrant), or say why this model cannot."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise SlconvertError(f"{model.config.model_type} does not support gradient checkpointing; "
                             "set gradient_checkpointing: false")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x spelling
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
