"""What `slconvert inspect` reports about a checkpoint, as one JSON-ready dict.

The model is built on the meta device, so parameter counts and shapes are exact without reading a single
weight, and a 100B-parameter checkpoint is inspected in seconds.
"""

from __future__ import annotations

from slkernels import SuperlinearConfig

from ..dtypes import config_dtype, element_bytes
from ..model_card import attended_keys
from .plan import check_weights, open_source, select_layers

__all__ = ["summarize", "kv_cache_bytes_per_token"]


def kv_cache_bytes_per_token(shape, layers: int, dtype_bytes: int) -> int:
    """Keys + values of `layers` softmax layers for one token."""
    return 2 * shape.heads_kv * shape.head_dim * dtype_bytes * layers


def summarize(model_dir, params: SuperlinearConfig, *, layers: str | None = None, keep_dense: str | None = None) -> dict:
    source = open_source(model_dir)
    existing = source.raw_config.get("superlinear")  # a converted checkpoint's block, checked by open_source
    # A checkpoint whose weights are missing, truncated or do not fit its config.json is not fine to convert: inspect
    # says so as convert would, rather than report a model the weights do not make.
    check_weights(source, source.weights)
    converted = select_layers(source, layers, keep_dense)
    attention = source.attention_layers
    shape = source.attention_shape(attention[0])
    source.check_not_shared(converted)
    dtype = str(config_dtype(source.raw_config) or "bfloat16")
    dtype_bytes = element_bytes(dtype, 2)
    layer_rows = []
    for info in source.layers:
        module = source.layer_module(info.index)
        count = sum(p.numel() for p in module.parameters()) if module is not None else None
        layer_rows.append(
            {
                "index": info.index,
                "kind": info.label,
                "config_kind": info.kind,
                "parameters": count,
                "attention": info.is_attention,
                "converted": info.index in converted,
            }
        )
    total = sum(p.numel() for p in source.meta_model.parameters())
    router_params = sum(shape.heads_q * shape.head_dim**2 for _ in converted)
    per_token = kv_cache_bytes_per_token(shape, len(attention), dtype_bytes)
    lengths = {"128K": 128 * 1024, "1M": 1024 * 1024}
    return {
        "path": str(source.directory),
        "model_type": source.arch.model_type,
        "architecture": source.arch.description or source.arch.model_type,
        "num_layers": len(source.layers),
        "parameters": total,
        "layers": layer_rows,
        "attention": {
            "heads_q": shape.heads_q,
            "heads_kv": shape.heads_kv,
            "head_dim": shape.head_dim,
            "rope": shape.rope,
            "scale": shape.scaling,
            "q_norm": source.arch.q_norm,
            "k_norm": source.arch.k_norm,
            "output_gate": source.arch.output_gate,
        },
        "attention_layers": attention,
        "converted_layers": converted,
        "dense_attention_layers": [i for i in attention if i not in converted],
        "router_parameters": router_params,
        "kv_cache": {
            "dtype": dtype,
            "bytes_per_token": per_token,
            "bytes_per_1M_tokens": per_token * 1024 * 1024,
            "note": "Superlinear attention keeps every key and value; the recurrent layers' state is constant",
        },
        "existing_conversion": existing,
        "superlinear": {
            "params": params.to_dict(),
            "window": params.window,
            "attended_keys_per_query": {label: attended_keys(params, t) for label, t in lengths.items()},
        },
    }
