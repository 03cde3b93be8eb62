"""Getting a loaded model ready for training: precision, parameter dtypes, activation checkpointing, and what
the data-parallel wrappers (DDP, FSDP2) are told about it."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from ..errors import SlconvertError
from ..router import ROUTER_ATTRIBUTE

__all__ = ["precision", "autocast", "load_dense", "set_training_dtypes", "enable_checkpointing", "fsdp_launch",
           "fsdp_plugin", "needs_unused_parameter_search"]

# A MoE block that keeps one module per expert (transformers' stacked experts are one parameter for all).
_PER_EXPERT = re.compile(r"\.experts\.\d+\.")


def precision(recipe, device: torch.device) -> str:
    """The recipe's compute precision, "bf16" (autocast) or "no": bf16 where the GPU has it under `auto`."""
    if recipe.precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if recipe.precision == "bf16" else "no"


def autocast(device: torch.device, mode: str):
    """The context a forward and its losses run in: bf16 autocast for "bf16", nothing for "no".

    torch's own autocast rather than accelerate's `mixed_precision`: accelerate fixes that choice once per
    process, and one process may run several recipes in turn (Python API, tests).
    """
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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

    `sharded` (FSDP2): each parameter is sharded on its own, so frozen bf16 weights sit next to float32
    masters as they do unsharded; the all-gather casts them to bf16 for the forward (`fsdp_plugin`). Without
    bf16 there is no compute dtype to gather in, and FSDP2 gathers one dtype per layer: the model is float32.
    """
    if autocast_bf16:
        for param in model.parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()
    elif sharded:
        model.float()


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


def fsdp_launch() -> bool:
    """Whether `accelerate launch` was asked for FSDP (configs/accelerate/fsdp.yaml)."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def fsdp_plugin(mode: str):
    """accelerate's FSDP plugin for this run: the launch config's settings, FSDP2 only; under bf16, compute
    in bf16 (the all-gathered parameters) with gradients reduced in float32 into the float32 masters."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads the launch config (FSDP_* variables)
    if plugin.fsdp_version != 2:
        raise SlconvertError(f"this launch asks for FSDP version {plugin.fsdp_version}; training runs on FSDP2 "
                             "(fsdp_version: 2, as in configs/accelerate/fsdp.yaml)")
    if mode == "bf16":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return plugin


def needs_unused_parameter_search(model, recipe, window: int | None) -> bool:
    """Whether DDP must look for trainable parameters that got no gradient in a step (`find_unused_parameters`).

    Only when some can: a converted layer's router gets its gradient through the gate of the spans it picked,
    and a query picks none until it is W tokens past the start, so a trainable router under a stage of at most
    W tokens (every sequence of a stage has its full length) ends its steps without one; an MoE block that
    keeps a module per expert leaves the experts no token reached without one. Every other parameter takes
    part in every forward. Without the next-token loss DDP runs no forward and is not asked.
    """
    if recipe.lm_weight == 0:
        return False
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    if any(_PER_EXPERT.search(name) for name in trainable):
        return True
    if window is not None and any(ROUTER_ATTRIBUTE in name for name in trainable):
        return min(stage.seq_len for stage in recipe.stages()) <= window
    return False
