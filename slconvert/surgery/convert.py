"""Writing the converted checkpoint: streamed shards, router tensors, config block, card, atomic rename.

Each source weight file becomes an output file of the same name holding the same tensors (cast to
``--dtype`` if asked) plus the routers of the converted layers whose query projection lives in that file.
Tensors are streamed from disk (`SafetensorsWriter`), so the peak memory of a conversion does not grow
with the shard size. The source directory is only ever opened for reading.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from .._version import __version__
from ..checkpoint import (
    DTYPES,
    INDEX_FILE,
    SINGLE_FILE,
    SafetensorsWriter,
    atomic_output_dir,
    carried_files,
    check_output_location,
    copy_small_file,
    sha256_file,
    write_text,
)
from ..dtypes import FLOAT_DTYPES, config_name
from ..errors import SlconvertError
from ..model_card import model_card
from ..router import ROUTER_ATTRIBUTE, ROUTER_PARAMETERIZATION
from .plan import ConversionPlan

__all__ = ["convert", "superlinear_block", "TORCH_DTYPE_NAMES"]

# --dtype values -> safetensors dtype names (None: keep every tensor's dtype).
TORCH_DTYPE_NAMES = {"auto": None, **{name: st for name, (_, st) in FLOAT_DTYPES.items() if name != "float64"}}


def superlinear_block(plan: ConversionPlan, hashes: dict[str, str]) -> dict:
    """The `superlinear` entry of the output config.json: everything needed to rebuild the layers."""
    shapes = plan.shapes
    return {
        "format": 1,
        "slconvert_version": __version__,
        "params": plan.params.to_dict(),
        "window": plan.params.window,
        "layers": list(plan.layers),
        "dense_attention_layers": plan.dense_attention_layers,
        "router": {
            "parameterization": ROUTER_PARAMETERIZATION,
            "attribute": ROUTER_ATTRIBUTE,
            "init": plan.router_init,
            "seed": plan.seed if plan.router_init == "random" else None,
            "alpha": {str(i): shapes[i].scaling for i in plan.layers},
            "shape": {str(i): [shapes[i].heads_q, shapes[i].head_dim, shapes[i].head_dim] for i in plan.layers},
            "tensors": {str(i): plan.router_name(i) for i in plan.layers},
        },
        "source": {
            "path": str(plan.source.directory.resolve()),
            "model_type": plan.source.raw_config.get("model_type"),
            "sha256": hashes,
        },
    }


def _router_dtype(plan: ConversionPlan, layer: int) -> str:
    q_name = f"{plan.disk_prefix[layer]}.{plan.source.arch.q_proj}.weight"
    source_dtype = plan.weights.locate(q_name).tensors[q_name].dtype
    if plan.dtype is not None and source_dtype in ("F64", "F32", "F16", "BF16"):
        return plan.dtype
    return source_dtype if source_dtype in ("F64", "F32", "F16", "BF16") else "F32"


def _output_config(plan: ConversionPlan, block: dict) -> dict:
    config = dict(plan.source.raw_config)
    if plan.dtype is not None:
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = config_name(plan.dtype)
    config["superlinear"] = block
    return config


def convert(plan: ConversionPlan, out, *, force: bool = False, progress: bool = True) -> dict:
    """Write the converted checkpoint to `out` (atomically) and return its `superlinear` block."""
    out = Path(out)
    source_dir = plan.source.directory
    check_output_location(source_dir, out, force)
    hashes = {}
    for weight_file in tqdm(plan.weights.files, desc="hashing source", unit="file", disable=not progress):
        hashes[weight_file.path.name] = sha256_file(weight_file.path)
    block = superlinear_block(plan, hashes)

    routers_by_file: dict[str, list[int]] = {}
    for layer in plan.layers:
        q_name = f"{plan.disk_prefix[layer]}.{plan.source.arch.q_proj}.weight"
        routers_by_file.setdefault(plan.weights.locate(q_name).path.name, []).append(layer)

    total = sum(len(f.tensors) for f in plan.weights.files) + len(plan.layers)
    with atomic_output_dir(out, force=force) as tmp:
        weight_map: dict[str, str] = {}
        total_bytes = 0
        with tqdm(total=total, desc="writing weights", unit="tensor", disable=not progress) as bar:
            for weight_file in plan.weights.files:
                # A single file keeps the name transformers reads (a lone `weights.safetensors` becomes
                # model.safetensors: under its own name the output would not load).
                out_name = weight_file.path.name if plan.weights.sharded else SINGLE_FILE
                writer = SafetensorsWriter(tmp / out_name, metadata=weight_file.metadata)
                for name in weight_file.tensors:
                    writer.add_copy(weight_file, name, out_dtype=plan.dtype)
                for layer in routers_by_file.get(weight_file.path.name, []):
                    weight = plan.router_weight(layer, DTYPES[_router_dtype(plan, layer)][0])
                    writer.add_tensor(plan.router_name(layer), weight)
                writer.write(progress=lambda _name: bar.update(1))
                total_bytes += writer.total_bytes()
                weight_map.update({tensor: out_name for tensor in writer.names})
        if plan.weights.sharded:
            index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            write_text(tmp / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        carried = carried_files(source_dir)  # the source's own logs and results stay with the source
        # Every name written into OUT, so that a later `convert --force` replaces exactly this and nothing a user
        # added beside it (checkpoint._check_replaceable).
        block["files"] = sorted({*weight_map.values(), *([INDEX_FILE] if plan.weights.sharded else []),
                                 "config.json", "README.md", *(item.name for item in carried)})
        write_text(tmp / "config.json", json.dumps(_output_config(plan, block), indent=2, sort_keys=True) + "\n")
        for item in carried:
            copy_small_file(item, tmp / item.name)
        write_text(tmp / "README.md", model_card(plan, block))
    return block


def check_dtype(name: str) -> str | None:
    if name not in TORCH_DTYPE_NAMES:
        raise SlconvertError(f"unknown --dtype {name!r}; use one of {', '.join(TORCH_DTYPE_NAMES)}")
    return TORCH_DTYPE_NAMES[name]
