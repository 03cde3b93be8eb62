"""The model's output head applied by the loss, a sequence chunk at a time, instead of by the model's forward.

A causal LM's forward ends with ``logits = lm_head(states)``, and some architectures then cast or scale them
(NemotronH returns ``.float()`` logits, Granite divides by ``logits_scaling``). At 32K positions and a 131K
vocabulary that is a 16 GiB float32 tensor in the forward and another as its gradient in the backward: more than
the rest of a converted Nemotron-3-Nano's training step, and an out-of-memory error on an 80 GB GPU. Training
instead runs the forward with the head's own forward bypassed (`head_bypassed`: the module returns its input), so
the model returns its last states [B, L, hidden] with whatever cast or scale follows the head, and the loss
(`losses._chunked_sums`) applies the head to one chunk of positions at a time, recomputing it in the backward.
The head stays where it is (same module, same parameters and names, same DDP / FSDP bookkeeping); only its
forward is skipped for the duration of one call.

That gives the forward's own logits when what follows the head commutes with it (a cast, a scalar scale of a
bias-free head). `chunked_head` checks it once per model on a few tokens and returns None where it does not
hold (a soft cap, dropout), and the loss then takes the full logits as before. Under FSDP the trainer does not
use it: there the head's weight may be a shard outside the model's forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

__all__ = ["output_head", "head_bypassed", "apply_head", "chunked_head"]

_CHECK_TOKENS = 8
_CHECK_TOLERANCE = 0.02  # relative to the largest logit: bf16 rounds a product of the same terms in another order


def output_head(model) -> torch.nn.Module | None:
    """The module that maps the last states to logits (`lm_head`), or None where the model names none."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    return head if isinstance(head, torch.nn.Module) else None


def _identity(states: torch.Tensor) -> torch.Tensor:
    return states


@contextlib.contextmanager
def head_bypassed(head: torch.nn.Module | None):
    """Within the block, calling `head` returns its input (its hooks still run); None: nothing changes."""
    if head is None:
        yield
        return
    saved = head.__dict__.get("forward")
    head.forward = _identity
    try:
        yield
    finally:
        if saved is None:
            del head.forward
        else:
            head.forward = saved


def apply_head(head: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function from a chunk of the bypassed forward's output to that chunk's logits: the head, called in the
    dtype of its weights (NemotronH's forward hands back float32 states where the head is bf16)."""
    dtype = next(head.parameters()).dtype

    def logits(states: torch.Tensor) -> torch.Tensor:
        return head(states.to(dtype))

    return logits


def chunked_head(model, call, vocab_size: int, device: torch.device, context=contextlib.nullcontext):
    """`apply_head` of `model`'s head when the forward `call` (the model, or its DDP / FSDP wrapper) with the head
    bypassed, then the head, gives the forward's own logits on a few tokens (within `_CHECK_TOLERANCE` of the
    largest); None otherwise. `context` makes the context the training forward runs in (autocast). Every process
    calls it: under DDP the forwards are collective."""
    head = output_head(model)
    if head is None or not any(True for _ in head.parameters()):
        return None
    ids = ((torch.arange(_CHECK_TOKENS, device=device) * 7919 + 3) % vocab_size)[None]
    logits = apply_head(head)
    with torch.no_grad(), context():
        full = call(input_ids=ids, use_cache=False).logits
        with head_bypassed(head):
            states = call(input_ids=ids, use_cache=False).logits
        try:  # what follows the head may leave it too few inputs (a slice of the vocabulary narrower than hidden)
            late = logits(states)
        except RuntimeError:
            return None
    if late.shape != full.shape:
        return None
    full, late = full.float(), late.float()
    bound = _CHECK_TOLERANCE * float(full.abs().max().clamp_min(1e-6))
    return logits if float((late - full).abs().max()) <= bound else None
