"""The transformers attention function "superlinear" and its mask registration.

Every hybrid model in transformers ends its softmax attention in
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v, mask, scaling=..., **kw)`` with q
already normed and rotated and k/v already concatenated with the cache. Registering one function under the
name "superlinear" therefore converts every architecture at once:

* a module that carries a router (`superlinear_router`) runs `slkernels.superlinear_attention` with its
  own `SuperlinearConfig`, q_search from the router, the host's softmax scale, and the key-axis position of
  every query row (so prefill, chunked prefill and one-token decode through the KV cache are the same call;
  `query_positions` finds it, since transformers passes the layers no `cache_position`);
* every other softmax layer (a layer kept dense) runs transformers' stock SDPA function unchanged.

The mask function registered under the same name (`superlinear_mask`) gives the layers what they read: when
every softmax layer of the model is converted, the 2-D mask [B, L_kv] of left padding and of a static cache's
unwritten slots (or None when there is neither),
never transformers' 4-D [B, 1, L_q, L_kv] boolean mask, which a chunked prefill would build for every chunk
(32 GiB for a 32K chunk at 1M context); with layers kept dense, transformers' `sdpa_mask` for them, reduced here
to the 2-D mask for the converted ones. Padded positions are excluded by the kernels with the dtype's finite
minimum, never -inf, because a NaN from a fully masked row would spread through the recurrent layers of a
hybrid model.

`capture_attention(model)` records the inputs of every converted layer's call, for span-recall analysis.

Under torch.compile (transformers' `generate` with a static cache compiles the forward on a GPU) a compiled inference
call holds the whole Superlinear call as one opaque operation, `torch.ops.slconvert.superlinear_attention`, so the
graph (and its CUDA graph) runs through it: checked on an H200 against the eager logits over CUDA-graph replays and
against the dynamic cache's tokens, and timed at 6.2 ms per token against 14.5 with graph breaks on a
Nemotron-3-Nano-shaped model at 32K. `ATTENTION_OP` off (environment `SLCONVERT_ATTENTION_OP=0`) lets dynamo trace
into the kernels' host code instead, which breaks the graph at every host read-back and recompiles as positions
change; there inductor cannot compile the decode kernel (its float arguments become float64 constants), so
`generate` with a static cache on a GPU needs the operation.

Each converted layer's calls through a cache (more keys than queries) share its router's `slkernels.LayerState`
(`KEEP_STATE`, environment `SLCONVERT_KEEP_STATE=0` to turn it off): with the "span_mean" search key and a cache of
at least `slkernels.state.KEEP_MIN_KEYS` keys the running sums of the layer's keys are then kept from one call to
the next, and a decode step writes only the blocks of keys that changed instead of rebuilding them over the whole
cache. They take about 3.4 times the layer's K cache until `clear_kept_state(model)`, a move of the model to another
device, or the model's end. In a compiled step the operation never makes them (CUDA-graph trees run its Python while recording, in the
graph's memory pool): the eager prefill before it does, for the cache's length, and a compiled call that would
have to make them builds the sums for itself instead, as without a state.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from collections.abc import Iterator

import torch
from slkernels import superlinear_attention

from .errors import SlconvertError
from .router import ROUTER_ATTRIBUTE, config_by_key, state_by_key

__all__ = ["ATTENTION_NAME", "register", "superlinear_attention_forward", "superlinear_mask", "capture_attention",
           "padding_mask", "query_positions", "clear_kept_state"]

ATTENTION_NAME = "superlinear"

# Kernel backend of `slkernels.superlinear_attention` for converted layers ("auto": fastest available).
BACKEND = "auto"

# Active captures: (ids of the routers to record, list the records go to).
_CAPTURES: list[tuple[frozenset, list]] = []

# Compiled inference runs the Superlinear call as one custom operation (module docstring).
ATTENTION_OP = os.environ.get("SLCONVERT_ATTENTION_OP", "1") != "0"

# Converted layers pass their router's LayerState to every call (module docstring).
KEEP_STATE = os.environ.get("SLCONVERT_KEEP_STATE", "1") != "0"


@torch.library.custom_op("slconvert::superlinear_attention", mutates_args=())
def _attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, q_search: torch.Tensor,
                  cache_position: torch.Tensor, attention_mask: torch.Tensor | None, config_key: str,
                  scale: float | None, state_key: str | None = None) -> torch.Tensor:
    """`slkernels.superlinear_attention` as one operation of a compiled graph (inference: no autograd)."""
    config = config_by_key(config_key)
    return superlinear_attention(query, key, value, q_search, config, cache_position=cache_position,
                                 attention_mask=attention_mask, scale=scale, backend=BACKEND, check_values=False,
                                 state=graph_state(state_key, config, key))


@_attention_op.register_fake
def _attention_op_shape(query, key, value, q_search, cache_position, attention_mask, config_key, scale,
                        state_key=None):
    return query.new_empty(query.shape)


_WARNED_REBUILDS: set[str] = set()


def graph_state(state_key: str | None, config, key: torch.Tensor):
    """The layer's state for a call inside a compiled graph, or None. Never one that the call would make arrays in
    (the graph's memory pool would own them, and a replay reuse that memory): that call builds the sums for itself,
    with a warning once per layer. A call being recorded into a CUDA graph keeps the state's present arrays alive for
    the graphs recorded over them (`LayerState.hold_for_graphs`)."""
    state = state_by_key(state_key) if state_key is not None else None
    if state is None:
        return None
    if state.allocates(config, key):
        if key.device.type != "cpu" and state_key not in _WARNED_REBUILDS:  # (the CPU's reference builds them anyway)
            _WARNED_REBUILDS.add(state_key)
            warnings.warn("a compiled Superlinear call builds the span-mean running sums itself on every call: the "
                          "layer's kept sums were not made for this cache by a call outside the compiled graph (an "
                          "eager prefill on the static cache makes them; a compiled prefill cannot)", stacklevel=2)
        return None
    if _recording(key):
        state.hold_for_graphs()
    return state


def _recording(key: torch.Tensor) -> bool:
    """Whether this call is being recorded into a CUDA graph (a graph tree's recording run)."""
    return key.is_cuda and torch.cuda.is_current_stream_capturing()


def _keeps_state(router, len_q: int, len_kv: int) -> bool:
    """Whether a call of this layer passes its state: with KEEP_STATE, where a cache holds keys beyond the call's
    own queries (a static cache, a decode step, a later prefill chunk; a forward without a cache would keep sums no
    later call reuses), and never from a DataParallel replica (its copy of the router shares the state across
    devices)."""
    return KEEP_STATE and len_kv > len_q and not getattr(router, "_is_replica", False)


def clear_kept_state(model: torch.nn.Module) -> int:
    """Drop what every converted layer of `model` keeps between calls (`slkernels.LayerState`); returns how many
    bytes that held. Arrays kept for recorded CUDA graphs go too: call it after `torch.compiler.reset()` where
    compiled graphs ran over them."""
    from .router import routers

    return sum(router.state.clear() for router in routers(model).values())


def _visible_keys(attention_mask: torch.Tensor | None, kv_length: int) -> torch.Tensor | None:
    """[B, L_kv] bool: the keys the last query row may see (a 2-D mask's nonzero entries, a 4-D mask's last row:
    boolean True or additive 0), or None without a mask."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask[:, :kv_length] != 0
    if attention_mask.dim() == 4:
        row = attention_mask[:, 0, -1, :kv_length]
        return row if row.dtype == torch.bool else row == 0
    raise SlconvertError(f"unexpected attention mask of shape {list(attention_mask.shape)}; expected 2-D or 4-D")


def _left_padding(visible: torch.Tensor | None, none_when_unpadded: bool) -> torch.Tensor | None:
    """The [B, L_kv] left-padding mask of the visible keys: every key from a row's first visible one on is real.
    With `none_when_unpadded` (a read-back to the host), None for a batch without padding, and a mask that hides a
    key between a row's first and last visible ones (right padding a generation has gone past, a gap) is refused:
    the kernels would attend to it."""
    if visible is None:
        return None
    positions = torch.arange(visible.shape[-1], device=visible.device).expand_as(visible)
    first = torch.where(visible, positions, torch.full_like(positions, visible.shape[-1])).amin(dim=-1)
    if none_when_unpadded:
        last = torch.where(visible, positions, torch.full_like(positions, -1)).amax(dim=-1)
        gapped = (visible.sum(dim=-1) != last - first + 1) & (last >= 0)
        padded, gaps = torch.stack([(first > 0).any(), gapped.any()]).tolist()
        if gaps:
            raise SlconvertError("the attention mask hides keys after a row's first real token (right padding that "
                                 "generation has gone past, or a gap); Superlinear layers take left padding only: "
                                 "pad on the left (tokenizer.padding_side = 'left')")
        if not padded:
            return None
    return (positions >= first[:, None]).to(torch.long)


def padding_mask(attention_mask: torch.Tensor | None, kv_length: int, *,
                 none_when_unpadded: bool = True) -> torch.Tensor | None:
    """The [B, L_kv] 0/1 left-padding mask behind a 2-D or 4-D mask, or None when no row is padded (found by reading
    the mask back to the host; `none_when_unpadded=False` skips that and always returns the mask).

    The last query row of a causal mask sees every real key up to its position, so its first visible key
    is s0, the first real token of the batch row. Keys after the last query (a static cache's empty
    slots) are never read by Superlinear attention and are marked real here.
    """
    return _left_padding(_visible_keys(attention_mask, kv_length), none_when_unpadded)


def query_positions(visible: torch.Tensor | None, len_q: int, len_kv: int, device: torch.device | str,
                    given=None) -> torch.Tensor:
    """Key-axis position of each query row, on `device` without a read-back: `given` (a `cache_position` the caller
    passed) when it lies on the key axis; else the rows that end at the last key the mask shows (a static cache's
    empty slots are hidden by `superlinear_mask`, and a causal 4-D mask's last row ends at its query); else the last
    L_q keys (a dynamic cache holds exactly the keys seen)."""
    last = torch.arange(len_kv - len_q, len_kv, device=device)
    if isinstance(given, torch.Tensor) and given.dim() == 1 and given.numel() == len_q:
        given = given.to(device=device, dtype=torch.long)
        return given if len_q == 0 else torch.where(given.max() < len_kv, given, last)
    if visible is None or len_q == 0:
        return last
    keys = torch.arange(visible.shape[-1], device=visible.device)
    end = torch.where(visible, keys, -1).amax().to(device)  # the rows of a batch share the cache: one end for all
    return torch.where(end >= len_q - 1, last + (end - (len_kv - 1)), last)


def superlinear_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset: int = 0,
                     attention_mask: torch.Tensor | None = None, config=None, **kwargs) -> torch.Tensor | None:
    """transformers mask function of "superlinear" models.

    When every softmax layer is converted: the [B, L_kv] 0/1 mask of keys kv_offset .. kv_offset + kv_length, 0 for
    left padding and for a static cache's slots not yet written (from q_offset + q_length on, so that the attention
    function finds the query rows' positions in it: transformers passes the layers no `cache_position`), or None for
    a cache that holds exactly the keys seen and a batch without padding. transformers' `sdpa_mask` when some layers
    are kept dense (they run SDPA; a causal 4-D mask shows both the padding and the positions) or when the model is
    not a converted one.
    """
    from transformers.masking_utils import sdpa_mask

    block = getattr(config, "superlinear", None)
    converted = isinstance(block, dict) and kwargs.get("local_size") is None
    written = q_offset + q_length
    empty_slots = isinstance(written, torch.Tensor) or kv_offset + kv_length > written
    if not converted or block.get("dense_attention_layers", True):
        if converted and empty_slots:
            kwargs["allow_is_causal_skip"] = False  # no mask at all would hide the positions from converted layers
        return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                         kv_offset=kv_offset, attention_mask=attention_mask, config=config, **kwargs)
    if attention_mask is not None and attention_mask.dim() != 2:
        return padding_mask(attention_mask, kv_length)
    if attention_mask is not None and attention_mask.shape[-1] > kv_offset + kv_length:
        # The cache reported fewer keys than the mask covers (MiniMax's cache counts its first layer, a linear
        # attention one, in decode): the mask is the truth, and such a cache holds exactly the keys seen.
        return padding_mask(attention_mask[:, kv_offset:], attention_mask.shape[-1] - kv_offset)
    keys = None
    if attention_mask is not None:
        keys = attention_mask[:, kv_offset:kv_offset + kv_length] != 0
        if keys.shape[-1] < kv_length:  # slots past the given mask: real unless empty (below)
            keys = torch.nn.functional.pad(keys, (0, kv_length - keys.shape[-1]), value=True)
    if not empty_slots:
        return _left_padding(keys, none_when_unpadded=True)
    device = keys.device if keys is not None else (written.device if isinstance(written, torch.Tensor)
                                                   else kwargs.get("device", "cpu"))
    filled = torch.arange(kv_offset, kv_offset + kv_length, device=device) < written
    keys = filled.expand(batch_size, kv_length) if keys is None else keys & filled
    return keys.to(torch.long)


# What the converted layers of the current forward derived from its mask: [weak reference to the mask, key, (mask,
# positions), index of the last layer that took them]. Every layer of one forward gets the same mask tensor from
# transformers, so the later layers of the forward take the first one's instead of deriving them again (about a
# dozen small operations per layer and decode step). A forward calls its layers in increasing order, so a layer at
# or below the last one that took them starts another forward and derives them again: the same mask object may come
# back with other contents and no version change (the compiled graphs of torch.compile's CUDA-graph mode hand back
# the same output tensors at every replay, written by the replay). Dropped with the mask.
_DERIVED: list = []


def _forget(ref) -> None:
    if _DERIVED and _DERIVED[0] is ref:
        _DERIVED.clear()


def _layer_mask_and_positions(router, attention_mask, len_q: int, len_kv: int, device, given):
    """The [B, L_kv] left-padding mask for the kernels (or None) and the query rows' key positions of a converted
    layer's call, derived from the mask once per forward.

    A 2-D mask comes from `superlinear_mask`, which returns None for a batch without padding: no need to read it
    back again in every layer. Both the mask and the positions are valid by construction, so the kernels' value
    checks (host read-backs, every layer and decode step) are skipped."""
    key = None
    if isinstance(attention_mask, torch.Tensor) and given is None and not torch.compiler.is_compiling():
        # the mask's version counter tells an in-place change (inference tensors keep none: they cannot change
        # outside inference mode, and transformers builds a new mask for every forward)
        version = -1 if attention_mask.is_inference() else attention_mask._version
        key = (version, len_q, len_kv, str(device))
        if (_DERIVED and _DERIVED[0]() is attention_mask and _DERIVED[1] == key
                and router.layer_idx > _DERIVED[3]):
            _DERIVED[3] = router.layer_idx
            return _DERIVED[2]
    visible = _visible_keys(attention_mask, len_kv)
    if visible is not None and visible.shape[-1] < len_kv:
        raise SlconvertError(
            f"layer {router.layer_idx}: the attention mask covers {visible.shape[-1]} keys but the layer holds {len_kv} "
            "(the model's cache reported another layer's length); convert without --keep-dense, or run without padding"
        )
    mask2d = _left_padding(visible, none_when_unpadded=attention_mask is None or attention_mask.dim() != 2)
    derived = (mask2d, query_positions(visible, len_q, len_kv, device, given))
    if key is not None:
        _DERIVED[:] = [weakref.ref(attention_mask, _forget), key, derived, router.layer_idx]
    return derived


def superlinear_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: Superlinear for converted layers, SDPA for the rest."""
    router = getattr(module, ROUTER_ATTRIBUTE, None)
    if router is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise SlconvertError(
            f"layer {router.layer_idx} uses a sliding window or logit soft-capping, which Superlinear attention "
            "does not model; reconvert with this layer in --keep-dense"
        )
    len_q, len_kv = query.shape[2], key.shape[2]
    mask2d, cache_position = _layer_mask_and_positions(router, attention_mask, len_q, len_kv, query.device,
                                                       kwargs.get("cache_position"))
    q_search = router(query)
    keeps = _keeps_state(router, len_q, len_kv)
    if ATTENTION_OP and torch.compiler.is_compiling() and not torch.is_grad_enabled():
        out = torch.ops.slconvert.superlinear_attention(query, key, value, q_search, cache_position, mask2d,
                                                        router.config_key, scaling, router.state_key if keeps else None)
    else:
        if _CAPTURES:
            _record(router, query, key, value, q_search, scaling, mask2d, cache_position)
        out = superlinear_attention(query, key, value, q_search, router.config, cache_position=cache_position,
                                    attention_mask=mask2d, scale=scaling, backend=BACKEND, check_values=False,
                                    state=router.state if keeps and not torch.compiler.is_compiling() else None)
    return out.transpose(1, 2).contiguous(), None


def _record(router, query, key, value, q_search, scaling, mask2d, cache_position) -> None:
    for ids, records in _CAPTURES:
        if id(router) in ids:
            records.append(
                {
                    "layer_idx": router.layer_idx,
                    "q": query.detach(),
                    "k": key.detach(),
                    "v": value.detach(),
                    "q_search": q_search.detach(),
                    "config": router.config,
                    "scale": scaling,
                    "attention_mask": None if mask2d is None else mask2d.detach(),
                    "cache_position": cache_position.detach(),
                }
            )


@contextlib.contextmanager
def capture_attention(model: torch.nn.Module) -> Iterator[list[dict]]:
    """Record every converted layer's attention inputs while active.

    Yields a list that receives, per call, a dict with keys ``layer_idx, q, k, v, q_search, config, scale,
    attention_mask`` (2-D [B, L_kv] 0/1 or None) and ``cache_position`` ([L_q]); tensors are detached.
    """
    from .router import routers

    ids = frozenset(id(r) for r in routers(model).values())
    entry = (ids, [])
    _CAPTURES.append(entry)
    try:
        yield entry[1]
    finally:
        for position, active in enumerate(_CAPTURES):
            if active is entry:
                del _CAPTURES[position]
                break


_REGISTERED = False


def register() -> str:
    """Register the "superlinear" attention and mask functions with transformers (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(ATTENTION_NAME, superlinear_attention_forward)
        AttentionMaskInterface.register(ATTENTION_NAME, superlinear_mask)
        _REGISTERED = True
    return ATTENTION_NAME
