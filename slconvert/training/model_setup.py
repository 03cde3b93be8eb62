"""Loading a model for training and getting it ready: precision, parameter dtypes, activation checkpointing, and
what the data-parallel wrappers (DDP, FSDP2) are told about it, including FSDP2's loading on the main process
alone (`main_process_loading`)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch

from ..dtypes import FLOAT_DTYPES, config_dtype
from ..errors import SlconvertError, first_line
from ..router import ROUTER_ATTRIBUTE

__all__ = ["precision", "autocast", "load_dense", "training_model", "set_training_dtypes", "enable_checkpointing",
           "fsdp_launch", "fsdp_plugin", "main_process_loading", "reads_weights", "model_layout", "check_same_model",
           "sharing_main_weights", "prepare_for_training", "give_optimizer_shards", "needs_unused_parameter_search"]

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
    from ..checkpoint import check_checkpoint
    from ..loading import load_pretrained

    check_checkpoint(path)
    return load_pretrained(path, dtype=torch.float32)  # missing or misshapen weights, load failures: one line


def distill_teacher(path: Path, model, device: torch.device, sharded: bool):
    """The frozen dense teacher of `distill_weight` at `path` (`preflight.distill_path`), on `device`, in the 16-bit
    dtype its config.json names, else float32 (frozen, like the model's own frozen weights). A whole copy per
    process: refused under FSDP."""
    if sharded:
        raise SlconvertError("distillation keeps a whole teacher on every device, and this launch shards the model "
                             "with FSDP; run on one device or with configs/accelerate/ddp.yaml, or set "
                             "distill_weight=0")
    with torch.device(device):
        teacher = load_dense(path)
    stored = FLOAT_DTYPES.get(config_dtype(json.loads((path / "config.json").read_text())), (torch.float32,))[0]
    if stored in (torch.bfloat16, torch.float16):
        teacher = teacher.to(stored)
    vocab, mine = teacher.get_output_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0]
    if vocab != mine:
        raise SlconvertError(f"the distillation teacher {path} predicts {vocab} tokens and the model {mine}; "
                             "distill from the model it was converted from")
    return teacher.eval().requires_grad_(False)


def check_teacher_tokenizer(path: Path, tokenizer) -> None:
    """Refuse a distillation teacher whose tokenizer is not the model's, before either model loads: the teacher's
    distribution is matched id for id, and a vocabulary of the same size with other ids would be matched silently
    (`distill_teacher` checks the sizes). A teacher without a tokenizer is taken as the model's."""
    from ..loading import load_tokenizer

    theirs = load_tokenizer(path, missing_ok=True)
    if theirs is not None and theirs.get_vocab() != tokenizer.get_vocab():
        raise SlconvertError(f"the distillation teacher {path} has another tokenizer than the model (its ids name "
                             "other tokens); distill from the model it was converted from")


def training_model(path: Path, model_kind: str, *, device: torch.device | None = None, weights: bool = True):
    """The checkpoint a run starts from: `slconvert.load` (model_kind converted) or `load_dense`, each tensor
    loaded straight onto `device` (None: host memory).

    weights=False: the same model (same parameters, dtypes, routers, buffers) with every parameter on the meta
    device, for a process that receives its weights from the main process (`main_process_loading`): nothing
    is read but config.json and the safetensors headers.
    """
    if not weights:
        return _empty_model(Path(path), model_kind)
    from ..loading import load

    with contextlib.nullcontext() if device is None else torch.device(device):
        return load(path) if model_kind == "converted" else load_dense(path)


def _empty_model(path: Path, model_kind: str):
    """`training_model` without the weights: the model class built from config.json with its parameters on the
    meta device and its buffers computed as its constructor computes them (rotary frequencies: buffers left out
    of the state dict are not sent by the main process). The dtype is the one loading picks: float32 for a
    dense checkpoint; for a converted one the checkpoint's, as transformers reads it under dtype="auto" (the
    config's, else that of the first floating tensor of the first weight file)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from ..attention import register
    from ..checkpoint import DTYPES, check_checkpoint
    from ..loading import attach_superlinear, converted_block, quiet_transformers, transformers_config

    weight_set = check_checkpoint(path)  # the checks loading makes (headers only)
    kwargs, block = {}, None
    if model_kind == "converted":
        block = converted_block(path)
        kwargs["attn_implementation"] = register()
    config = transformers_config(path)
    try:
        with quiet_transformers():
            if model_kind != "converted":
                dtype = torch.float32
            elif getattr(config, "dtype", None) is not None:
                dtype = config.dtype
            else:
                first = min(weight_set.files, key=lambda f: f.path.name)
                floating = [DTYPES[first.tensors[name].dtype][0] for name in sorted(first.tensors)]
                dtype = next((d for d in floating if d.is_floating_point), torch.float32)
            with init_empty_weights(include_buffers=False):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise SlconvertError(f"transformers could not build the model of {path}: "
                             f"{first_line(err)}") from None
    if block is not None:
        attach_superlinear(model, block)  # routers on the meta device, like the parameters they sit beside
    model.eval()
    return model


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


def reads_weights(plugin, rank: int) -> bool:
    """Whether the process of this rank reads the checkpoint's weights: every process does, except under
    `main_process_loading`, where only the main process (rank 0) does."""
    return rank == 0 or not main_process_loading(plugin)


def main_process_loading(plugin) -> bool:
    """Whether only the main process reads the checkpoint: an FSDP launch with `fsdp_cpu_ram_efficient_loading`
    (configs/accelerate/fsdp.yaml). The other processes build the model on the meta device
    (`training_model(..., weights=False)`) and receive their shards from the main process when accelerate
    prepares the model (`sharing_main_weights`), so the host holds one copy of the weights, not one per GPU."""
    return plugin is not None and bool(plugin.cpu_ram_efficient_loading)


def model_layout(model) -> list[tuple]:
    """What every process must agree on before the main process's weights are broadcast into the others' shards:
    each parameter's name, shape, dtype and whether it trains; each buffer's name, shape, dtype and whether it
    is saved (in the state dict)."""
    layout: list[tuple] = [("param", name, tuple(p.shape), str(p.dtype), p.requires_grad)
                           for name, p in model.named_parameters()]
    for module_name, module in model.named_modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                layout.append(("buffer", f"{module_name}.{name}" if module_name else name, tuple(buffer.shape),
                               str(buffer.dtype), name not in module._non_persistent_buffers_set))
    return layout


def check_same_model(model) -> None:
    """Stop every process with one line when some process built a different model than the main process's (a
    broadcast between tensors of different sizes or dtypes would hang or hand out wrong weights)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = model_layout(model)
    layouts: list = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, mine)
    main = layouts[0]
    for rank, theirs in enumerate(layouts[1:], start=1):
        if theirs != main:
            first = next((a, b) for a, b in zip(main + [None], theirs + [None]) if a != b)
            raise SlconvertError(f"process {rank} built a different model than the main process (main: {first[0]}, "
                                 f"process {rank}: {first[1]}); every process must load the same checkpoint with "
                                 "the same recipe")


@contextlib.contextmanager
def sharing_main_weights(model):
    """Around `accelerator.prepare` under `main_process_loading`: the processes check that they built the same
    model, and persistent buffers reach the other processes too.

    accelerate's FSDP2 preparation (cpu_ram_efficient_loading) moves the model to the meta device, shards it,
    and broadcasts the main process's state dict into the shards entry by entry; it keeps each process's own
    copy of the buffers left out of the state dict. A buffer in the state dict has no device mesh and stops
    that broadcast (Nemotron-H's MoE routing bias, `e_score_correction_bias`, is one): such buffers are left out
    of the state dict while the model is prepared, then sent from the main process and put back.
    """
    import torch.distributed as dist

    check_same_model(model)
    held = [(module, name) for module in model.modules() for name, buffer in module._buffers.items()
            if buffer is not None and name not in module._non_persistent_buffers_set]
    for module, name in held:
        module._non_persistent_buffers_set.add(name)
    try:
        yield
    finally:
        for module, name in held:
            module._non_persistent_buffers_set.discard(name)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for module, name in held:
            dist.broadcast(module._buffers[name], src=0)


def prepare_for_training(accelerator, model, optimizer, scheduler, plugin):
    """`accelerator.prepare(model, optimizer, scheduler)`, with what `main_process_loading` needs around it."""
    loads = main_process_loading(plugin)
    with sharing_main_weights(model) if loads else contextlib.nullcontext():
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if loads:
        give_optimizer_shards(optimizer, model)
    return model, optimizer, scheduler


def give_optimizer_shards(optimizer, model) -> None:
    """After `accelerator.prepare` under `main_process_loading`: the optimizer gets the model's sharded trainable
    parameters.

    accelerate finds the shard of each optimizer parameter by the address of its storage, and a parameter on
    the meta device has none (every address reads 0): on the processes that built the model there, all
    optimizer entries would point at one shard. The optimizer was made from the model's trainable parameters
    in their order, one group, and has taken no step yet, so the shards replace them in that order.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = optimizer.param_groups
    if len(groups) != 1 or len(groups[0]["params"]) != len(params) or optimizer.state:
        raise SlconvertError(f"the optimizer holds {sum(len(g['params']) for g in groups)} parameters in "
                             f"{len(groups)} group(s) where the sharded model has {len(params)} trainable ones; "
                             "launch with fsdp_cpu_ram_efficient_loading: false")
    groups[0]["params"] = params


def needs_unused_parameter_search(model, recipe, window: int | None) -> bool:
    """Whether DDP must look for trainable parameters that got no gradient in a step (`find_unused_parameters`).

    Only when some can: a converted layer's router gets its gradient through the gate of the spans it picked,
    and a query picks none until it is W tokens past the start, so a trainable router under a stage of at most
    W tokens (every sequence of a stage has its full length) ends its steps without one; an MoE block that
    keeps a module per expert leaves the experts no token reached without one. Every other parameter takes
    part in every forward. Without a loss on the model's output DDP runs no forward and is not asked.
    """
    if not recipe.through_logits:
        return False
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    if any(_PER_EXPERT.search(name) for name in trainable):
        return True
    if window is not None and any(ROUTER_ATTRIBUTE in name for name in trainable):
        return min(stage.seq_len for stage in recipe.stages()) <= window
    return False
