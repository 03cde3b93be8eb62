"""One process of a two-process FSDP2 run on the CPU (gloo), started by torch.distributed.run from
tests/test_train_distributed.py with the environment `accelerate launch` derives from configs/accelerate/fsdp.yaml.

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_cpu_worker.py MODEL OUT

accelerate runs FSDP only on GPUs, so the accelerator here is a CPU one told that it runs FSDP2 with the
launch config's plugin; everything else is what `Trainer` does: `training_model`, `select_trainable`,
`set_training_dtypes`, an AdamW over the trainable parameters, `prepare_for_training`, then two steps in bf16.
It runs twice, every process loading the weights, then only the main process loading them (the other one
must not read any: every safetensors and tensor reader raises there). Rank 0 writes OUT/<loading>.pt: the
full state dict after `prepare` and after the steps, the losses, and what each process saw.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parent.parent


def fsdp_launch_env() -> dict[str, str]:
    """The FSDP settings `accelerate launch --config_file configs/accelerate/fsdp.yaml` hands its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(REPO / "configs" / "accelerate" / "fsdp.yaml"),
                                               "--num_processes", "2", "--main_process_port", "0", "train.py"])
    args, _, _ = _validate_launch_command(args)  # refuses cpu_ram_efficient_loading without sync_module_states
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}


@contextlib.contextmanager
def no_weight_reads():
    """Every way a process could read tensor data from a checkpoint fails while this is active."""
    import safetensors
    import safetensors.torch
    import transformers.modeling_utils

    import slconvert.checkpoint
    import slconvert.loading

    def refuse(*args, **kwargs):
        raise AssertionError(f"a weight file was read: {args[:1]}")

    targets = [(safetensors, "safe_open"), (safetensors.torch, "safe_open"), (safetensors.torch, "load_file"),
               (transformers.modeling_utils, "safe_open"), (transformers.modeling_utils, "load_state_dict"),
               (slconvert.checkpoint, "read_tensor"), (slconvert.loading, "read_tensor")]
    saved = [(module, name, getattr(module, name)) for module, name in targets]
    for module, name, _ in saved:
        setattr(module, name, refuse)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def _run(path: Path, accelerator, rank: int) -> dict:
    from accelerate.utils import DistributedType
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from slconvert.training.model_setup import (
        fsdp_plugin,
        prepare_for_training,
        reads_weights,
        set_training_dtypes,
        training_model,
    )
    from slconvert.training.trainable import select_trainable

    plugin = fsdp_plugin("bf16")
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    weights = reads_weights(plugin, rank)
    with contextlib.nullcontext() if weights else no_weight_reads():
        model = training_model(path, "converted", weights=weights)
    seen = {"rank": rank, "weights": weights, "devices": sorted({p.device.type for p in model.parameters()})}
    select_trainable(model, "attention")
    set_training_dtypes(model, sharded=True, autocast_bf16=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model, optimizer, scheduler = prepare_for_training(accelerator, model, optimizer, scheduler, plugin)
    prepared = get_model_state_dict(model, options=full)
    trainable = [p for p in model.parameters() if p.requires_grad]
    held = optimizer.param_groups[0]["params"]
    seen["optimizer_holds_the_shards"] = len(held) == len(trainable) and all(a is b for a, b in zip(held, trainable))
    seen["buffers"] = {name: buffer.cpu() for name, buffer in model.named_buffers()}
    losses = []
    for step in range(2):
        ids = torch.randint(4, 200, (1, 48), generator=torch.Generator().manual_seed(100 * step + rank))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    trained = get_model_state_dict(model, options=full)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {**seen, "losses": losses})
    return {"prepared": prepared, "trained": trained, "processes": everyone}


def main() -> None:
    from accelerate import Accelerator

    path, out = Path(sys.argv[1]), Path(sys.argv[2])
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    for loading in ("every", "main"):
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true" if loading == "main" else "false"
        result = _run(path, accelerator, rank)
        if rank == 0:
            torch.save(result, out / f"{loading}.pt")
        accelerator.free_memory()
        dist.barrier()


if __name__ == "__main__":
    main()
