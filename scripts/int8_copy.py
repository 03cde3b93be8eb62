"""An int8 copy of a small float checkpoint, and the float32 checkpoint back from it.

The conversion study's teacher (27M parameters, 108 MB in float32) has to travel between a GPU machine and this
checkout, through channels that limit what they carry (a few files of 16 MiB back from a command, 64 MiB in all to
it). Its int8 copy, gzipped, is under a quarter of that, and a study measures the float32 model rebuilt from the
copy, so every row compares the same weights.

    python scripts/int8_copy.py pack MODEL COPY      # COPY/: int8.safetensors.gz plus MODEL's config and tokenizer
    python scripts/int8_copy.py unpack COPY MODEL    # MODEL/model.safetensors in float32, the same config and tokenizer

Each floating-point tensor of two or more dimensions is stored as int8 with one float32 scale per row of its last
dimension (absmax / 127: a weight moves by at most half a step, scale / 2); every other tensor is kept as it is.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

WEIGHTS = "int8.safetensors.gz"  # gzip saves a tenth: it counts against what a command may carry
SCALE_SUFFIX = ".int8_row_scale"
LEVELS = 127.0


def _weight_files(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


def _copy_side_files(source: Path, dest: Path) -> None:
    """Config, tokenizer and the rest of a checkpoint folder's small files, without its weights or their index."""
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and not path.name.endswith(".safetensors.index.json"):
            shutil.copy2(path, dest / path.name)


def quantize(tensor):
    """(int8 values, float32 scale per row of the last dimension)."""
    import torch

    rows = tensor.float().reshape(-1, tensor.shape[-1])
    scale = (rows.abs().amax(dim=1) / LEVELS).clamp_min(torch.finfo(torch.float32).tiny)
    values = torch.round(rows / scale[:, None]).clamp(-LEVELS, LEVELS).to(torch.int8)
    return values.reshape(tensor.shape), scale


def dequantize(values, scale):
    rows = values.float().reshape(-1, values.shape[-1]) * scale[:, None]
    return rows.reshape(values.shape)


def pack(model: Path, copy: Path) -> Path:
    from safetensors.torch import load_file, save

    files = _weight_files(model)
    if not (model / "config.json").is_file() or not files:
        sys.exit(f"error: {model} is not a checkpoint folder (config.json and *.safetensors); give the model's folder")
    copy.mkdir(parents=True, exist_ok=True)
    out = {}
    for path in files:
        for name, tensor in load_file(path).items():
            if tensor.is_floating_point() and tensor.dim() >= 2:
                out[name], out[name + SCALE_SUFFIX] = quantize(tensor)
            else:
                out[name] = tensor.contiguous()
    (copy / WEIGHTS).write_bytes(gzip.compress(save(out, metadata={"format": "int8-rows"}), compresslevel=6))
    _copy_side_files(model, copy)
    return copy / WEIGHTS


def unpack(copy: Path, model: Path) -> Path:
    from safetensors.torch import load, save_file

    if not (copy / WEIGHTS).is_file() or not (copy / "config.json").is_file():
        sys.exit(f"error: {copy} holds no int8 copy ({WEIGHTS} and config.json); make one with `int8_copy.py pack`")
    stored = load(gzip.decompress((copy / WEIGHTS).read_bytes()))
    out = {}
    for name, tensor in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(name + SCALE_SUFFIX)
        out[name] = tensor.contiguous() if scale is None else dequantize(tensor, scale)
    model.mkdir(parents=True, exist_ok=True)
    save_file(out, model / "model.safetensors", metadata={"format": "pt"})
    _copy_side_files(copy, model)
    return model / "model.safetensors"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="MODEL -> its int8 copy")
    p.add_argument("model", type=Path)
    p.add_argument("copy", type=Path)
    u = sub.add_parser("unpack", help="an int8 copy -> a float32 checkpoint")
    u.add_argument("copy", type=Path)
    u.add_argument("model", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        written = pack(args.model, args.copy)
    else:
        written = unpack(args.copy, args.model)
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
