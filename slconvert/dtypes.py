"""Dtype names, in one table: the names a user, a config.json and a safetensors header give a dtype.

`FLOAT_DTYPES` holds the floating dtypes by the name transformers writes in config.json ("bfloat16"), each with
its torch dtype and its safetensors name ("BF16"); `ALIASES` are the short spellings accepted where a user names
one ("bf16"); `SAFETENSORS_DTYPES` is every dtype a checkpoint may store, by its safetensors name.
"""

from __future__ import annotations

import torch

from .errors import SlconvertError

__all__ = ["FLOAT_DTYPES", "ALIASES", "SAFETENSORS_DTYPES", "SAFETENSORS_FLOATS", "parse_dtype", "safetensors_name",
           "config_name", "config_dtype", "element_bytes", "resolve_dtype"]

# config.json name -> (torch dtype, safetensors name)
FLOAT_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "F32"),
    "float16": (torch.float16, "F16"),
    "bfloat16": (torch.bfloat16, "BF16"),
    "float64": (torch.float64, "F64"),
}
ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# safetensors name -> (torch dtype, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
SAFETENSORS_FLOATS = tuple(name for _, name in FLOAT_DTYPES.values())


def config_dtype(raw_config: dict) -> str | None:
    """The dtype name a config.json records: `dtype` (transformers 5), else `torch_dtype` (earlier versions)."""
    return raw_config.get("dtype") or raw_config.get("torch_dtype")


def parse_dtype(name: str, *, also: tuple[str, ...] = ()) -> torch.dtype:
    """The torch dtype of a floating dtype's name or alias ("bfloat16", "bf16", ...); otherwise one line naming
    the accepted names (and `also`, the caller's own choices such as "auto")."""
    key = ALIASES.get(name, name)
    if key not in FLOAT_DTYPES:
        raise SlconvertError(f"unknown dtype {name!r}; use one of {', '.join([*also, *FLOAT_DTYPES, *ALIASES])}")
    return FLOAT_DTYPES[key][0]


def safetensors_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype ("BF16" for torch.bfloat16)."""
    for name, (torch_dtype, _) in SAFETENSORS_DTYPES.items():
        if torch_dtype == dtype:
            return name
    raise SlconvertError(f"dtype {dtype} cannot be stored in safetensors by this tool")


def config_name(safetensors: str) -> str:
    """The config.json name of a floating safetensors dtype ("bfloat16" for "BF16")."""
    return next(name for name, (_, st) in FLOAT_DTYPES.items() if st == safetensors)


def element_bytes(name: str, default: int) -> int:
    """Bytes per element of a floating dtype named as in config.json, `default` for a name not in the table."""
    return FLOAT_DTYPES[name][0].itemsize if name in FLOAT_DTYPES else default


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype a user asked for (a torch dtype, a name or an alias: "bfloat16", "bf16"); None for none
    or "auto", where the loader keeps its own default (`slconvert.load`: the checkpoint's dtype)."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return None if dtype == "auto" else dtype
    return parse_dtype(dtype, also=("auto",))
