"""Checking the tensors of one attention call and deriving what every backend needs from them.

Backends receive an `AttentionInputs` whose shapes are known good, so they never have to decode a
broadcasting error from deep inside torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import SuperlinearConfig
from .errors import SuperlinearConfigError, SuperlinearInputError
from .state import LayerState

__all__ = ["AttentionInputs", "check_inputs", "read_back_checks", "first_real_token"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class AttentionInputs:
    q: torch.Tensor  # [B, H_q, L_q, D]
    k: torch.Tensor  # [B, H_kv, L_kv, D]
    v: torch.Tensor  # [B, H_kv, L_kv, D_v]
    q_search: torch.Tensor  # [B, H_q, L_q, D]
    config: SuperlinearConfig
    cache_position: torch.Tensor  # int64 [L_q], on the device of q
    first_real: torch.Tensor  # int64 [B]: s0, index of the first real (non-padding) key
    scale: float
    state: LayerState | None = None  # kept between calls of one layer (`slkernels.LayerState`), or None

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.q.shape[1] // self.k.shape[1]


# s0 = 0 for every batch row (no mask), one read-only tensor per (batch, device) shared by every call without a mask:
# a decode step without padding then launches no fill (one kernel per layer and step otherwise, in a captured CUDA
# graph too). Made outside inference mode (so that a training call may save it for backward). Never made while a CUDA
# graph is being captured (the graph's memory pool would own it): a capture takes the one an earlier call made (a
# capture's warm-up call makes it), else a fill of its own. A torch.compile trace always makes its own.
_NO_PADDING: dict[tuple[int, torch.device], torch.Tensor] = {}


def _capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on `device`'s current stream (no read-back, no lasting allocation)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _no_padding(batch: int, device: torch.device) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return torch.zeros(batch, dtype=torch.int64, device=device)
    s0 = _NO_PADDING.get((batch, device))
    if s0 is None:
        if _capturing(device):
            return torch.zeros(batch, dtype=torch.int64, device=device)
        with torch.inference_mode(False):
            s0 = _NO_PADDING[batch, device] = torch.zeros(batch, dtype=torch.int64, device=device)
    return s0


def first_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """s0 per batch row, for a left-padded 0/1 mask (a row of zeros gives L_kv: every query is padding)."""
    mask = attention_mask != 0
    length = mask.shape[-1]
    positions = torch.arange(length, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, length)).amin(dim=-1)


def read_back_checks(cache_position: torch.Tensor | None, attention_mask: torch.Tensor | None, len_kv: int) -> None:
    """The checks that read values back to the host, one synchronisation each: every position on the key axis, and
    left padding only. Takes the positions and the mask as given (any integer dtype, [L_q] or [1, L_q]) or as
    converted; `check_inputs` has checked their shapes, here or on an earlier call of a replayed key."""
    if cache_position is not None and cache_position.numel():
        low, high = torch.stack(torch.aminmax(cache_position)).tolist()  # one read-back for both ends
        if low < 0 or high >= len_kv:
            raise SuperlinearInputError(
                f"cache_position values must lie in [0, {len_kv - 1}] (the key axis), got [{low}, {high}]"
            )
    if attention_mask is not None:
        real = attention_mask != 0
        after, other = torch.stack([(real[:, :-1] & ~real[:, 1:]).any(), (real & (attention_mask != 1)).any()]).tolist()
        if other:  # 0.5 or NaN would be read as a real token
            raise SuperlinearInputError("attention_mask holds values other than 0 and 1; give 1 for a real token and 0 "
                                        "for padding")
        if after:
            raise SuperlinearInputError(
                "attention_mask has padding after a real token; only left padding is supported "
                "(tokenizer.padding_side = 'left')"
            )


def _listed(names) -> str:
    """``q, k, v`` or ``q_search and k``: the tensors a message names."""
    names = list(names)
    return " and ".join(names) if len(names) == 2 else ", ".join(names)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_search: torch.Tensor,
    config: SuperlinearConfig,
    cache_position: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    scale: float | None,
    check_values: bool = True,
    state: LayerState | None = None,
    query_name: str = "q",
) -> AttentionInputs:
    """Check one call's inputs once, at the edge, and return them with the defaults filled in. `query_name` is what
    the messages call ``q``: `select_spans` passes its search queries as both ``q`` and ``q_search``, and its keys as
    both ``k`` and ``v``, and its messages name only what its caller passed."""
    if not isinstance(config, SuperlinearConfig):
        raise SuperlinearConfigError(
            f"config must be a slkernels.SuperlinearConfig, got {type(config).__name__}; "
            "build one with SuperlinearConfig(...) or SuperlinearConfig.from_dict(...)"
        )
    if state is not None and not isinstance(state, LayerState):
        raise SuperlinearInputError(f"state must be a slkernels.LayerState (one per layer) or None, got "
                                    f"{type(state).__name__}")
    attended = {query_name: q, "k": k, **({"v": v} if v is not k else {})}
    named = {**attended, **({"q_search": q_search} if q_search is not q else {})}
    for name, tensor in named.items():
        if not isinstance(tensor, torch.Tensor):
            raise SuperlinearInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise SuperlinearInputError(
                f"{name} must have 4 dims [batch, heads, length, head_dim], got shape {_shape(tensor)}"
            )
        if tensor.dtype not in _FLOAT_DTYPES:
            raise SuperlinearInputError(f"{name} has dtype {tensor.dtype}; use float16, bfloat16, float32 or float64")
        if tensor.device != q.device:
            raise SuperlinearInputError(f"{name} is on {tensor.device} but {query_name} is on {q.device}; "
                                        "move all inputs to one device")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise SuperlinearInputError(f"{_listed(attended)} must share one dtype, got "
                                    f"{_listed(str(t.dtype) for t in attended.values())}")
    batch, heads_q, len_q, dim = q.shape
    if q_search.shape != q.shape:
        raise SuperlinearInputError(f"q_search must have {query_name}'s shape {_shape(q)}, got {_shape(q_search)}")
    if k.shape[0] != batch or v.shape[0] != batch:
        raise SuperlinearInputError("batch sizes differ: " + ", ".join(f"{n} {t.shape[0]}" for n, t in attended.items()))
    if k.shape[:3] != v.shape[:3]:
        raise SuperlinearInputError(f"k {_shape(k)} and v {_shape(v)} must agree in batch, heads and length")
    if k.shape[3] != dim:
        raise SuperlinearInputError(f"k has head_dim {k.shape[3]} but {query_name} has {dim}; they must match")
    if dim == 0:
        raise SuperlinearInputError(f"{query_name} and k have head_dim 0; a head needs at least one dimension")
    heads_kv, len_kv = k.shape[1], k.shape[2]
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise SuperlinearInputError(
            f"query heads ({heads_q}) must be a multiple of key/value heads ({heads_kv}) for grouped-query attention"
        )
    if len_q > len_kv:
        keys = list(attended)[1:]  # k, and v where the caller passed one
        raise SuperlinearInputError(f"{query_name} has {len_q} rows but {'/'.join(keys)} only {len_kv}; "
                                    f"{_listed(keys)} must hold every position, cache included")

    # Value checks read tensors back to the host; inside CUDA-graph capture that is illegal, so they are
    # skipped there (the shapes are still checked, and the same call was checked when run eagerly).
    # `check_values=False` skips them too, for callers that guarantee both (a model's attention layers, on every
    # decode step, where each read-back is a host synchronisation).
    read_back = check_values and not _capturing(q.device)
    if cache_position is None:
        cache_position = torch.arange(len_kv - len_q, len_kv, device=q.device)
    else:
        if not isinstance(cache_position, torch.Tensor):
            cache_position = torch.as_tensor(cache_position)
        if cache_position.dtype.is_floating_point or cache_position.dtype == torch.bool:
            raise SuperlinearInputError(f"cache_position must hold integers, got {cache_position.dtype}")
        if cache_position.dim() == 2 and cache_position.shape[0] == 1:
            cache_position = cache_position[0]
        if cache_position.dim() != 1 or cache_position.shape[0] != len_q:
            raise SuperlinearInputError(
                f"cache_position must be [L_q] = [{len_q}], got {_shape(cache_position)}"
            )
        cache_position = cache_position.to(device=q.device, dtype=torch.int64)
        if read_back:
            read_back_checks(cache_position, None, len_kv)

    if attention_mask is None:
        first_real = _no_padding(batch, q.device)
    else:
        if not isinstance(attention_mask, torch.Tensor):
            attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.shape != (batch, len_kv):
            raise SuperlinearInputError(
                f"attention_mask must be [batch, L_kv] = [{batch}, {len_kv}], got {_shape(attention_mask)}"
            )
        attention_mask = attention_mask.to(q.device)
        if read_back:
            read_back_checks(None, attention_mask, len_kv)
        first_real = first_real_token(attention_mask)

    if scale is None:
        scale = 1.0 / math.sqrt(dim)
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise SuperlinearInputError(f"scale must be a positive finite number, got {scale!r}")

    return AttentionInputs(
        q=q,
        k=k,
        v=v,
        q_search=q_search,
        config=config,
        cache_position=cache_position,
        first_real=first_real,
        scale=float(scale),
        state=state,
    )
