"""Shared builders for the training tests: tiny converted checkpoints, built once per process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file
from slkernels import SuperlinearConfig

from slconvert.surgery import convert, plan_conversion
from slconvert.tiny import build_tiny_model

_ROOT = Path(tempfile.mkdtemp(prefix="slconvert-train-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

# Small window (W = 15) so that 96..256-token sequences have most rows beyond it.
TINY_PARAMS = SuperlinearConfig(sw_index=3, num_spans=2, search_power=0.5, span_power=0.5,
                                backward_factor=2.0, forward_factor=0.0)


def converted(model_type: str = "nemotron_h", *, peaked: float = 0.0, router_init: str = "host_logits",
              layers: str | None = "MAEA", dtype: str | None = None) -> Path:
    """A tiny converted checkpoint.

    peaked > 0 makes every query projection `peaked` times its key projection (query head h copies key
    head h // group): a query then scores highest the keys of tokens like its own, so dense attention
    is sharply peaked on earlier occurrences of the current token. dtype: the converted weights' safetensors
    dtype ("BF16"), None to keep float32.
    """
    # one cache entry per checkpoint, however the call spells it: `converted("nemotron_h")` and
    # `converted(layers="MAEA")` are one directory, and a second build of it would find it there
    return _converted(model_type, peaked, router_init, layers, dtype)


FAST = "granitemoehybrid"  # Mamba-2 + attention, no RoPE: the quickest tiny hybrid on CPU


def fast_model(**kwargs) -> Path:
    """The quickest tiny converted hybrid for end-to-end training runs (four layers, two converted)."""
    return converted(FAST, layers="MAMA", **kwargs)


@functools.cache
def _converted(model_type: str, peaked: float, router_init: str, layers: str | None, dtype: str | None) -> Path:
    tag = f"{model_type}-{peaked}-{router_init}-{layers}" + (f"-{dtype}" if dtype else "")
    source = build_tiny_model(model_type, _ROOT / f"src-{tag}", layers=layers, seed=0)
    if peaked:
        path = source / "model.safetensors"
        tensors = load_file(path)
        for name in list(tensors):
            if name.endswith("q_proj.weight"):
                key = tensors[name.replace("q_proj", "k_proj")]
                repeat = tensors[name].shape[0] // key.shape[0]
                head_dim = 16
                heads = key.reshape(-1, head_dim, key.shape[1]).repeat_interleave(repeat, dim=0)
                tensors[name] = (peaked * heads.reshape(-1, key.shape[1])).contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    out = _ROOT / f"conv-{tag}"
    convert(plan_conversion(source, TINY_PARAMS, router_init=router_init, seed=1, dtype=dtype), out, progress=False)
    return out
