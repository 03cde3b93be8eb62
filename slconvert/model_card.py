"""The README.md written next to a converted checkpoint: what was converted, how, and how to load it.

A converted directory travels without the command that made it; the card makes it self-describing
(parameters, layers, router, source hashes) and warns that plain transformers loading gives the dense model.
"""

from __future__ import annotations

from slkernels.geometry import anchor_offset, span_reach

__all__ = ["model_card", "attended_keys"]


def attended_keys(params, t: int) -> dict:
    """Keys one query attends to, and anchor dot products it computes, after t tokens (no padding)."""
    window = params.window
    anchors, i = 0, params.sw_index + 1
    while anchor_offset(i, params.search_power) <= t:  # about t ** search_power steps
        anchors, i = anchors + 1, i + 1
    span = sum(span_reach(params, t)) + 1
    before_window = max(t - window, 0)
    attended = min(t, window + min(params.num_spans, anchors) * min(span, before_window))
    return {"t": t, "dense": t, "superlinear": attended, "anchors": anchors, "ratio": t / max(attended, 1)}


def model_card(plan, block: dict) -> str:
    params = block["params"]
    source = block["source"]
    router = block["router"]
    arch = plan.source.arch
    rows = "\n".join(f"| `{k}` | {v} |" for k, v in params.items())
    hashes = "\n".join(f"- `{name}`: `{digest}`" for name, digest in sorted(source["sha256"].items()))
    dense = ", ".join(str(i) for i in block["dense_attention_layers"]) or "none"
    at_128k = attended_keys(plan.params, 128 * 1024)
    at_1m = attended_keys(plan.params, 1024 * 1024)
    return f"""---
library_name: transformers
tags:
- superlinear-attention
- slconvert
---

# Superlinear-attention conversion of a `{arch.model_type}` model

This checkpoint was produced by `slconvert convert` (version {block["slconvert_version"]}) from
`{source["path"]}`. The softmax attention of layers {", ".join(str(i) for i in block["layers"])} was turned
into Superlinear attention (arXiv 2601.18401); attention layers kept dense: {dense}. All other weights are
unchanged{"" if plan.dtype is None else f" (cast to {plan.dtype})"}.

## Superlinear parameters

| parameter | value |
|---|---|
{rows}

Window W = {block["window"]} tokens. Keys attended per query: {at_128k["superlinear"]:,} at 128K tokens
(dense {at_128k["dense"]:,}), {at_1m["superlinear"]:,} at 1M (dense {at_1m["dense"]:,}).
Sequences of at most W + 1 tokens give exactly the original model's outputs.

## Router

Parameterization `{router["parameterization"]}`: each converted attention module carries a
`{router["attribute"]}` whose weight [H_q, D, D] maps the host query (after its norms and RoPE) to the search
query, per head. Initialization `{router["init"]}`{"" if router["seed"] is None else f" (seed {router['seed']})"}
{"(alpha x identity: the search score at an anchor is the host attention's own scaled logit, so the selected spans are those the original attention scores highest)." if router["init"] == "host_logits" else "."}

## Loading

```python
import slconvert

model = slconvert.load("path/to/this/directory")  # Superlinear layers, routers loaded
```

`transformers.AutoModelForCausalLM.from_pretrained` on this directory gives the original dense model and
reports the router tensors as unused weights. No remote code is needed.

## Source weights (sha256)

{hashes}
"""
