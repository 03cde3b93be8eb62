"""Forward + backward time and peak memory of each layer kind (Mamba-2, MoE, attention) of a teacher, per length.

Shows where a whole-model training step spends its time and memory: one layer of each kind runs alone on random
hidden states of B x L tokens (B * L = --tokens) under bf16 autocast, three timed repetitions after one warm-up.

    python scripts/profile_layers.py --size study --lengths 2048,4096,8192 --out layer_profile.json   # (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def profile(size: str, lengths: list[int], tokens: int) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from slconvert.assets.teacher import teacher_config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    config = teacher_config(size)
    model = AutoModelForCausalLM.from_config(config).to(device).float()
    layers = model.model.layers if hasattr(model, "model") else model.backbone.layers
    kinds = getattr(config, "layers_block_type", None) or [type(layer).__name__ for layer in layers]
    rows, seen = [], set()
    for index, layer in enumerate(layers):
        if kinds[index] in seen:
            continue
        seen.add(kinds[index])
        for length in lengths:
            batch = max(1, tokens // length)
            x = torch.randn(batch, length, config.hidden_size, device=device, requires_grad=True)
            positions = torch.arange(length, device=device)

            def step(layer=layer, x=x, batch=batch, length=length, positions=positions):
                with torch.autocast(device, dtype=torch.bfloat16):
                    try:
                        out = layer(x, position_ids=positions[None].expand(batch, length), cache_position=positions)
                    except TypeError:
                        out = layer(x)
                out = out[0] if isinstance(out, tuple) else out
                out.float().sum().backward()

            def sync():
                if cuda:
                    torch.cuda.synchronize()

            row = {"layer": index, "kind": kinds[index], "seq_len": length, "batch": batch}
            try:
                step()
                sync()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                for _ in range(3):
                    step()
                sync()
                ms = (time.perf_counter() - start) / 3 * 1e3
                row.update(fwd_bwd_ms=round(ms, 2), tokens_per_s=round(batch * length / ms * 1e3),
                           peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)
            except Exception as err:  # noqa: BLE001 - an out-of-memory row is a result too
                row["error"] = repr(err)[:300]
            print(json.dumps(row), flush=True)
            rows.append(row)
            x = None
            if cuda:
                torch.cuda.empty_cache()
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="study", help="teacher size (slconvert/assets/teacher.py TEACHER_SIZES)")
    parser.add_argument("--lengths", default="2048,4096,8192")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per step (batch = tokens / length)")
    parser.add_argument("--out", default="layer_profile.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    from conversion_study import _importable  # slconvert / slkernels from this checkout when not installed

    _importable()
    import torch

    from slconvert.benchmark.host import device_name, versions

    rows = profile(args.size, [int(x) for x in args.lengths.split(",")], args.tokens)
    card = device_name(0) if torch.cuda.is_available() else "cpu"
    Path(args.out).write_text(json.dumps({"card": card, **versions("torch"), "size": args.size,
                                          "command": " ".join(["scripts/profile_layers.py", *(argv or sys.argv[1:])]),
                                          "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
