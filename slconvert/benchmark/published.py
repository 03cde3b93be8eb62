"""The paper authors' published kernels (`pip install superlinear`) as a second baseline, when installed.

Only the forward prefill is timed: that is what the benchmark protocol of docs/semantics.md compares (its 1M-token
chunked prefill figure comes from those kernels). The package has two GQA prefill paths, and each is timed on its
own so that every published figure says which path it belongs to:

- ``generic``: ``prefill_gqa``, the general-purpose GQA prefill;
- ``bucketed``: ``fused_prefill_with_swtriton_bucketed_gqa``, which groups query rows with similar span ranges.

Both take the same arguments. The adapter maps a `SuperlinearConfig` onto them and reports, next to each timing,
how far the path's output lies from `slkernels` on the same inputs, so that a reader can tell a faster kernel from
a different attention. A path the installed version lacks is skipped, with the reason recorded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable

import torch
from slkernels import SuperlinearConfig

__all__ = ["MODULE", "PATHS", "available", "describe", "prefill_fn", "prefill_fns", "relative_difference",
           "skipped_paths", "version"]

MODULE = "superlinear.kernels.superlinear.attention"
# path name -> function of MODULE, in the order the bench times them
PATHS: dict[str, str] = {
    "generic": "prefill_gqa",
    "bucketed": "fused_prefill_with_swtriton_bucketed_gqa",
}


def available() -> bool:
    if "superlinear" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("superlinear") is not None
    except (ImportError, ValueError):
        return False


def version() -> str:
    try:
        return importlib.metadata.version("superlinear")
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get("superlinear"), "__version__", "unknown"))


def _functions() -> tuple[dict[str, Callable[..., torch.Tensor]], dict[str, str]]:
    """(path -> the package's function, path -> why it is skipped) for every path of PATHS."""
    try:
        module = importlib.import_module(MODULE)
    except Exception as err:  # noqa: BLE001 - an unusable install skips every path, with the reason
        reason = f"{MODULE} cannot be imported ({type(err).__name__}: {err})"
        return {}, {path: reason for path in PATHS}
    found, skipped = {}, {}
    for path, name in PATHS.items():
        fn = getattr(module, name, None)
        if callable(fn):
            found[path] = fn
        else:
            skipped[path] = f"superlinear {version()} has no {MODULE}.{name}"
    return found, skipped


def skipped_paths() -> dict[str, str]:
    """path -> reason, for the paths of PATHS the installed package cannot run (all of them when not installed)."""
    if not available():
        return {path: "the superlinear package is not installed" for path in PATHS}
    return _functions()[1]


def describe() -> dict:
    """What the bench records about the package: installed or not, its version, the paths timed and those skipped."""
    if not available():
        return {"installed": False, "paths": {}, "skipped": skipped_paths()}
    found, skipped = _functions()
    return {"installed": True, "version": version(), "paths": {path: PATHS[path] for path in found},
            "skipped": skipped}


def _adapter(fn: Callable[..., torch.Tensor], config: SuperlinearConfig) -> Callable[..., torch.Tensor]:
    def run(q, k, v, q_search, cache_position):
        return fn(q_search, q, k, v, cache_position=cache_position, sw_index=config.sw_index,
                  num_spans=config.num_spans, backward_factor=config.backward_factor,
                  forward_factor=config.forward_factor, span_power=config.span_power,
                  search_power=config.search_power, inv_search_power_int=None)

    return run


def prefill_fns(config: SuperlinearConfig) -> dict[str, Callable[..., torch.Tensor]]:
    """path -> f(q, k, v, q_search, cache_position) -> output, for each path the installed package has."""
    found, _ = _functions()
    return {path: _adapter(fn, config) for path, fn in found.items()}


def prefill_fn(config: SuperlinearConfig, path: str = "generic") -> Callable[..., torch.Tensor]:
    """f(q, k, v, q_search, cache_position) -> output through one path of PATHS."""
    if path not in PATHS:
        raise ValueError(f"unknown published-kernel path {path!r}; choose from {', '.join(PATHS)}")
    fns = prefill_fns(config)
    if path not in fns:
        raise RuntimeError(skipped_paths().get(path, f"the {path} path is not available"))
    return fns[path]


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.double(), theirs.double()
    return ((ours - theirs).norm() / ours.norm().clamp_min(1e-30)).item()
