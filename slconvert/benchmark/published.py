"""The paper authors' published kernels (`pip install superlinear`) as a second baseline, when installed.

Only the forward prefill is timed: that is what the benchmark protocol of docs/semantics.md compares (its 1M-token chunked prefill figure
comes from those kernels). The adapter maps a `SuperlinearConfig` onto the package's keyword arguments and
reports, next to each timing, how far its output lies from `slkernels` on the same inputs, so that a
reader can tell a faster kernel from a different attention.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from slkernels import SuperlinearConfig

__all__ = ["available", "prefill_fn", "relative_difference"]


def available() -> bool:
    return importlib.util.find_spec("superlinear") is not None


def prefill_fn(config: SuperlinearConfig) -> Callable[..., torch.Tensor]:
    """f(q, k, v, q_search, cache_position) -> output, through the published GQA prefill."""
    from superlinear.kernels.superlinear.attention import prefill_gqa

    def run(q, k, v, q_search, cache_position):
        return prefill_gqa(q_search, q, k, v, cache_position=cache_position, sw_index=config.sw_index,
                           num_spans=config.num_spans, backward_factor=config.backward_factor,
                           forward_factor=config.forward_factor, span_power=config.span_power,
                           search_power=config.search_power, inv_search_power_int=None)

    return run


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.double(), theirs.double()
    return ((ours - theirs).norm() / ours.norm().clamp_min(1e-30)).item()
