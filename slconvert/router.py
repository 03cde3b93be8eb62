"""The router of a converted layer: it turns the host's query into the search query `q_search`.

Parameterization ("per_head_query_map"): for every query head h,

    q_search[b, h, l, :] = q[b, h, l, :] @ weight[h]          weight: [H_q, D, D]

where q is the host attention's query exactly as its attention function receives it (after the q norm
and RoPE, if the host has them). The search score at an anchor a is then

    s = q_search . k[a] = q . (weight[h] k[a])

so with ``weight[h] = alpha * I`` (the default "host_logits" initialization, alpha = the host's softmax
scale) the score equals the host attention's own scaled logit at that key: the top-k anchors are exactly
the keys the original attention scores highest, and the span gate ``softmax_j(s_j)`` is the original
attention's distribution restricted to the selected anchors. A per-head map on the query (rather than a
projection from the layer input) keeps the router small (H_q * D^2 parameters), reuses the host's RoPE so
the score keeps its positional behaviour, and makes this faithful initialization possible.
"random" initialization draws ``weight[h] = alpha * N(0, 1/D)`` from a seeded generator (an ablation).

The router's parameters receive gradients through `slkernels.superlinear_attention` (the gate is
differentiable w.r.t. q_search). They are saved with the checkpoint under the attention module's prefix
as ``<prefix>.superlinear_router.weight``.
"""

from __future__ import annotations

import itertools
import json
import weakref

import torch
from slkernels import LayerState, SuperlinearConfig
from torch import nn

from .errors import SlconvertError

__all__ = [
    "ROUTER_ATTRIBUTE",
    "ROUTER_PARAMETERIZATION",
    "ROUTER_INITS",
    "SuperlinearRouter",
    "config_by_key",
    "initial_router_weight",
    "routers",
    "state_by_key",
]

ROUTER_ATTRIBUTE = "superlinear_router"
ROUTER_PARAMETERIZATION = "per_head_query_map"
ROUTER_INITS = ("host_logits", "random")

# SuperlinearConfigs by the JSON of their fields. A compiled graph passes a layer's config to the attention
# operation as this string (custom operations take strings, not dataclasses); a router computes its key once,
# when it is built, so that tracing reads a plain string attribute and never touches the dataclass.
_CONFIGS: dict[str, SuperlinearConfig] = {}


def _config_key(config: SuperlinearConfig) -> str:
    key = json.dumps(config.to_dict(), sort_keys=True)
    _CONFIGS.setdefault(key, config)
    return key


def config_by_key(key: str) -> SuperlinearConfig:
    """The `SuperlinearConfig` whose key a router holds in `config_key`."""
    return _CONFIGS[key]


# Each router's `LayerState` by a name of its own, for the same reason: a compiled graph passes the name. Weak values:
# a state lives as long as its router.
_STATES: weakref.WeakValueDictionary[str, LayerState] = weakref.WeakValueDictionary()
_STATE_NAMES = itertools.count()


def _state_key(state: LayerState) -> str:
    key = f"layer-state-{next(_STATE_NAMES)}"
    _STATES[key] = state
    return key


def state_by_key(key: str) -> LayerState | None:
    """The `LayerState` whose key a router holds in `state_key` (None once its router is gone)."""
    return _STATES.get(key)


def initial_router_weight(
    num_heads: int,
    head_dim: int,
    *,
    init: str = "host_logits",
    alpha: float = 1.0,
    seed: int = 0,
    layer: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The [H_q, D, D] starting weight of one layer's router (see the module docstring)."""
    if init == "host_logits":
        weight = alpha * torch.eye(head_dim, dtype=torch.float64).expand(num_heads, head_dim, head_dim)
    elif init == "random":
        generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(layer))
        weight = torch.randn(num_heads, head_dim, head_dim, generator=generator, dtype=torch.float64)
        weight = weight * (alpha / head_dim**0.5)
    else:
        raise SlconvertError(f"unknown router init {init!r}; use one of {', '.join(ROUTER_INITS)}")
    return weight.to(dtype).contiguous()


class SuperlinearRouter(nn.Module):
    """Per-head linear map of the host query; also carries the layer's `SuperlinearConfig` (and its key) and the
    `slkernels.LayerState` its calls share (and its key): what the kernels keep from one call to the next, never
    saved with the checkpoint."""

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        config: SuperlinearConfig,
        layer_idx: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.config = config
        self.config_key = _config_key(config)
        self.layer_idx = layer_idx
        self.state = LayerState()
        self.state_key = _state_key(self.state)
        self.weight = nn.Parameter(
            initial_router_weight(num_heads, head_dim, dtype=dtype or torch.float32).to(device)
        )

    def __getstate__(self) -> dict:
        # a copy or a pickle holds no kept arrays and gets a state of its own (`__setstate__`)
        state = dict(super().__getstate__())
        state.pop("state", None)
        state.pop("state_key", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.state = LayerState()
        self.state_key = _state_key(self.state)

    def _apply(self, fn, *args, **kwargs):
        # a move to another device (`.to()`, `.cuda()`, ...) leaves what the state keeps behind, and the graphs
        # recorded over it with it; a move that keeps the device (a dtype change, a no-op `.to()`) keeps both, since
        # a compiled graph may still replay over the kept arrays
        device = self.weight.device
        out = super()._apply(fn, *args, **kwargs)
        if self.weight.device != device:
            self.state.clear()
        return out

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """query [B, H_q, L, D] -> q_search [B, H_q, L, D] in the query's dtype."""
        if query.shape[1] != self.num_heads or query.shape[-1] != self.head_dim:
            raise SlconvertError(
                f"router of layer {self.layer_idx} expects {self.num_heads} heads of {self.head_dim}, "
                f"got query of shape {list(query.shape)}; the checkpoint's router does not match its config"
            )
        return torch.einsum("bhld,hde->bhle", query, self.weight.to(query.dtype))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, layer={self.layer_idx}, {self.config}"


def routers(model: nn.Module) -> dict[int, SuperlinearRouter]:
    """Layer index -> router of every converted layer of a loaded model (for training code)."""
    found = {m.layer_idx: m for m in model.modules() if isinstance(m, SuperlinearRouter)}
    return dict(sorted(found.items()))
