"""Learning-rate schedule and trainable-parameter selection."""

from __future__ import annotations

import fnmatch
import math

import torch

from ..errors import SlconvertError
from ..router import ROUTER_ATTRIBUTE, routers

__all__ = ["lr_factor", "make_scheduler", "select_trainable"]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warm-up, then cosine down to `min_ratio`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer, recipe):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, recipe.warmup_steps, recipe.max_steps, recipe.min_lr_ratio)
    )


def _converted_attention_modules(model) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(getattr(module, ROUTER_ATTRIBUTE, None), torch.nn.Module)}


def select_trainable(model, trainable) -> list[str]:
    """Freeze everything but the chosen parameters; return the names of the trainable ones.

    trainable: "router" (the routers), "attention" (every parameter of the converted attention modules,
    routers included), "all", or a list of fnmatch patterns over parameter names (``*.self_attn.*``).
    """
    names = [name for name, _ in model.named_parameters()]
    if trainable == "all":
        chosen = set(names)
    elif trainable == "router":
        ids = {id(p) for r in routers(model).values() for p in r.parameters()}
        chosen = {name for name, p in model.named_parameters() if id(p) in ids}
    elif trainable == "attention":
        ids = {id(p) for m in _converted_attention_modules(model).values() for p in m.parameters()}
        chosen = {name for name, p in model.named_parameters() if id(p) in ids}
    else:
        chosen = set()
        for pattern in trainable:
            hits = {name for name in names if fnmatch.fnmatchcase(name, pattern)}
            if not hits:
                example = names[len(names) // 2] if names else "?"
                raise SlconvertError(f"trainable pattern {pattern!r} matches no parameter (names look like "
                                     f"{example!r}); fix the pattern")
            chosen |= hits
    if not chosen:
        raise SlconvertError(f"trainable={trainable!r} selects no parameter; is the model converted?")
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    return [name for name in names if name in chosen]
