"""Two processes (DDP on the CPU over gloo, started by torchrun as `accelerate launch` does on GPUs) follow the
one-process run step for step; an FSDP launch without GPUs stops with one clear line; FSDP2's preparation with
only the main process loading the weights gives the shards and training steps of every process loading them
(two processes on the CPU); on GPUs, FSDP2 trains in bf16 with float32 masters and leaves the frozen weights as
they were."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_helpers import converted

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(args: list[str], processes: int) -> None:
    base = [sys.executable, "-m", "slconvert.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_port", str(_free_port()), "-m", "slconvert.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(base + ["train", *args, "--quiet"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "event" not in line]


@pytest.mark.parametrize("recipe, overrides", [
    # lm_weight 0: the model runs without autograd and the router gradients are averaged by hand
    # (about 25 s in CI: `make test-slow`; the pipeline's default runs no router warm-up)
    pytest.param("router-warmup.yaml", ["seq_len=128", "router_rows=32", "lr=1e-2"], marks=pytest.mark.slow),
    # LM + router KL through DDP, two micro-batches per process (no_sync on the first)
    ("niah-curriculum.yaml", ["curriculum=[]", "seq_len=320", "data.niah_tasks=[single]", "router_rows=16",
                              "gradient_checkpointing=false", "lr=3e-3"]),
])
def test_two_processes_match_one(recipe, overrides, tmp_path):
    model = converted("granitemoehybrid", layers="MAMA")
    common = [f"recipes/{recipe}", "--model", str(model), "max_steps=3", "batch_size=4", "micro_batch_size=1",
              "save_every=0", "recall_rows=32", "warmup_steps=1", *overrides]
    _train([*common[:3], "--output", str(tmp_path / "one"), *common[3:]], 1)
    _train([*common[:3], "--output", str(tmp_path / "two"), *common[3:]], 2)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    start = load_file(model / "model.safetensors")
    # The gradients agree to float rounding (the losses above match to 1e-5); Adam can turn a rounding
    # difference of a near-zero gradient into a full lr-sized step, so weights are compared against the
    # size of the update rather than bit for bit.
    assert one.keys() == two.keys() == start.keys()
    for name in one:
        update = float((one[name] - start[name]).abs().mean())
        gap = float((two[name] - one[name]).abs().mean())
        assert gap <= 0.01 * update, (name, gap, update)
    summary = json.loads((tmp_path / "two" / "training_summary.json").read_text())
    assert summary["processes"] == 2


def test_fsdp_without_a_gpu_is_one_clear_line(tmp_path):
    """accelerate's FSDP needs GPUs; on a CPU-only machine the launch says so instead of a traceback."""
    model = converted("granitemoehybrid", layers="MAMA")
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
              "configs/accelerate/fsdp.yaml", "--num_processes", "2", "--main_process_port", str(_free_port()),
              "-m", "slconvert.cli", "train", "recipes/niah-curriculum.yaml", "--model", str(model), "--output",
              str(tmp_path / "out"), "max_steps=1", "batch_size=2", "micro_batch_size=1", "seq_len=320",
              "curriculum=[]", "data.niah_tasks=[single]", "router_kl_weight=0", "recall_rows=0", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONSAFEPATH="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "error: this launch asks for FSDP, which accelerate runs only on GPUs" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr.split("error: this launch asks for FSDP")[0]
    assert not (tmp_path / "out").exists()


def test_fsdp2_main_process_loading_gives_the_shards_of_every_process_loading(tmp_path):
    """tests/fsdp_cpu_worker.py on two processes (gloo), FSDP2 as configs/accelerate/fsdp.yaml sets it up, on a
    bf16 Nemotron-H checkpoint (MoE routing bias: a buffer in the state dict): with only rank 0 loading (rank 1
    builds the model on the meta device and reads no weight), the sharded model after `prepare` holds the
    checkpoint's weights in the training dtypes (frozen bf16, float32 masters, routers included) and equals,
    bit for bit, the one every process loads, as do the losses and weights of two training steps."""
    from fsdp_cpu_worker import fsdp_launch_env

    import slconvert
    from slconvert.training.model_setup import set_training_dtypes
    from slconvert.training.trainable import select_trainable

    model = converted("nemotron_h", dtype="BF16")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), str(REPO / "tests" / "fsdp_cpu_worker.py"), str(model), str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **fsdp_launch_env())
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    every, main = (torch.load(tmp_path / f"{loading}.pt") for loading in ("every", "main"))

    assert [(p["weights"], p["devices"]) for p in every["processes"]] == [(True, ["cpu"])] * 2
    assert [(p["weights"], p["devices"]) for p in main["processes"]] == [(True, ["cpu"]), (False, ["meta"])]
    assert all(p["optimizer_holds_the_shards"] for p in every["processes"] + main["processes"])
    for stage in ("prepared", "trained"):
        assert main[stage].keys() == every[stage].keys()
        for name, tensor in main[stage].items():
            assert tensor.dtype == every[stage][name].dtype and torch.equal(tensor, every[stage][name]), (stage, name)
    assert [p["losses"] for p in main["processes"]] == [p["losses"] for p in every["processes"]]
    first, second = (p["buffers"] for p in main["processes"])
    assert "model.layers.2.mixer.gate.e_score_correction_bias" in first
    assert first.keys() == second.keys() and all(torch.equal(first[n], second[n]) for n in first)

    reference = slconvert.load(model)
    select_trainable(reference, "attention")
    set_training_dtypes(reference, sharded=True, autocast_bf16=True)
    expected = reference.state_dict()
    assert expected.keys() == main["prepared"].keys()
    for name, tensor in expected.items():
        got = main["prepared"][name]
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), name
    moved = {n for n, t in expected.items() if not torch.equal(main["trained"][n], t)}
    trains = {n for n, p in reference.named_parameters() if p.requires_grad}
    assert moved <= trains and any("superlinear_router" in n for n in moved) and any("q_proj" in n for n in moved)


def _fsdp_launch(processes: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
            "configs/accelerate/fsdp.yaml", "--num_processes", str(processes), "--main_process_port", str(_free_port()),
            "-m", "slconvert.cli", "train"]


@pytest.mark.gpu
def test_fsdp2_trains_in_bf16_with_float32_masters_and_keeps_frozen_weights(tmp_path):
    """FSDP2 over the GPUs there are (two at most) on a bf16 checkpoint: the run completes and saves, the trainable
    weights move (written from their float32 masters), the frozen ones stay bf16 and bit for bit unchanged."""
    import slconvert

    processes = min(2, torch.cuda.device_count())
    model = converted("granitemoehybrid", layers="MAMA", dtype="BF16")
    out = tmp_path / "out"
    args = ["recipes/niah-curriculum.yaml", "--model", str(model), "--output", str(out), "max_steps=3",
            f"batch_size={2 * processes}", "micro_batch_size=1", "seq_len=320", "curriculum=[]",
            "data.niah_tasks=[single]", "router_kl_weight=0", "recall_rows=0", "save_every=2", "trainable=attention",
            "precision=bf16", "gradient_checkpointing=false", "lr=3e-3", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONSAFEPATH="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(_fsdp_launch(processes) + args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["processes"] == processes and summary["mixed_precision"] == "bf16" and summary["steps"] == 3
    assert all(torch.isfinite(torch.tensor(loss)) for loss in _losses(out))
    start, trained = load_file(model / "model.safetensors"), load_file(out / "model.safetensors")
    assert start.keys() == trained.keys()
    moved = set()
    for name, before in start.items():
        after = trained[name]
        if "self_attn" in name:  # trainable: saved from the float32 masters
            assert after.dtype == torch.float32, name
            moved |= {name} if not torch.equal(after.to(before.dtype), before) else set()
        else:
            assert after.dtype == before.dtype == torch.bfloat16 and torch.equal(after, before), name
    assert any("superlinear_router" in n for n in moved) and any("q_proj" in n for n in moved)
    assert slconvert.router.routers(slconvert.load(out))
    assert (out / "checkpoints" / "step-000002" / "trainer.json").is_file()
