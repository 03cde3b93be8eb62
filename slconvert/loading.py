"""`slconvert.load`: a converted checkpoint as a transformers model with Superlinear layers.

Loading is plain transformers loading plus three steps: the "superlinear" attention function is registered
and selected, a `SuperlinearRouter` is attached to each converted attention module, and its weight is read
from the checkpoint's safetensors. The stock model class is used, so the converted directory also loads
with `AutoModelForCausalLM.from_pretrained` alone: that gives the dense model, with the routers reported as
unused weights. Remote code is never run and pickle files are never read.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from slkernels import SuperlinearConfig

from .architectures import architecture_for
from .attention import register
from .checkpoint import find_weights, read_config, read_tensor
from .dtypes import resolve_dtype
from .errors import SlconvertError
from .fast_mamba import warn_if_cpu_cannot_run
from .router import ROUTER_ATTRIBUTE, SuperlinearRouter

__all__ = ["load", "is_converted", "install_routers", "read_block", "converted_block", "attach_superlinear",
           "quiet_transformers"]


def read_block(path) -> dict | None:
    """The `superlinear` block of a checkpoint's config.json, or None."""
    block = read_config(path).get("superlinear")
    return block if isinstance(block, dict) else None


def is_converted(path) -> bool:
    """True when the checkpoint's config.json has a `superlinear` block (made by `slconvert convert`)."""
    try:
        return read_block(path) is not None
    except SlconvertError:
        return False


def converted_block(path) -> dict:
    """The `superlinear` block of a converted checkpoint; any other checkpoint is refused in one line."""
    block = read_block(path)
    if block is None:
        raise SlconvertError(
            f"{path} is not a Superlinear checkpoint (config.json has no 'superlinear' block); "
            "run `slconvert convert` first, or load it with transformers"
        )
    return block


@contextlib.contextmanager
def quiet_transformers():
    """transformers' logging at errors only while a model is built (the routers are "unexpected" weights for the
    stock class; the loaders report what matters themselves), then back to what it was."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def install_routers(model: torch.nn.Module, block: dict, weights=None) -> dict[int, SuperlinearRouter]:
    """Attach a router to each converted attention module; load its weight from `weights` if given."""
    arch = architecture_for(model.config.model_type)
    params = SuperlinearConfig.from_dict(block["params"])
    names = weights.names() if weights is not None else set()
    recorded = block.get("router", {}).get("tensors", {})
    installed = {}
    for layer in block["layers"]:
        layer = int(layer)
        path = arch.attention_module_path(layer)
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise SlconvertError(f"converted layer {layer} has no attention module at {path}; the checkpoint is inconsistent") from None
        reference = next((p for p in module.parameters()), None)
        heads_q = int(model.config.num_attention_heads)
        head_dim = int(getattr(module, "head_dim", 0) or model.config.hidden_size // heads_q)
        router = SuperlinearRouter(
            heads_q,
            head_dim,
            params,
            layer,
            dtype=reference.dtype if reference is not None else torch.float32,
            device=reference.device if reference is not None else None,
        )
        if weights is not None:
            candidates = [recorded.get(str(layer))] + [
                f"{prefix}.{ROUTER_ATTRIBUTE}.weight" for prefix in arch.disk_candidates(layer)
            ]
            name = next((c for c in candidates if c and c in names), None)
            if name is None:
                raise SlconvertError(
                    f"the checkpoint lacks the router of converted layer {layer} ({candidates[1]}); reconvert the model"
                )
            tensor = read_tensor(weights.locate(name), name)
            if tuple(tensor.shape) != tuple(router.weight.shape):
                raise SlconvertError(
                    f"router of layer {layer} has shape {list(tensor.shape)}, expected {list(router.weight.shape)}; "
                    "the checkpoint is inconsistent"
                )
            with torch.no_grad():
                router.weight.copy_(tensor.to(router.weight.dtype))
        setattr(module, ROUTER_ATTRIBUTE, router)
        installed[layer] = router
    return installed


def attach_superlinear(model: torch.nn.Module, block: dict, weights=None) -> dict[int, SuperlinearRouter]:
    """Make a model built from a converted checkpoint's config the converted model: its routers attached
    (`install_routers`, weights read from `weights` if given) and the block kept in its config (the mask function
    reads it; save_pretrained keeps it even where config.json was multimodal)."""
    installed = install_routers(model, block, weights)
    model.config.superlinear = block
    return installed


def load(path, device=None, dtype=None):
    """Load a converted checkpoint as a transformers model with Superlinear layers (eval mode).

    device: where to put the model (default: CPU); dtype: torch dtype or name (default: the checkpoint's).
    Converted layers run `slkernels.superlinear_attention` with their routers; attention layers kept dense
    run transformers' SDPA; `generate()` works through the KV cache.
    """
    block = converted_block(path)
    weights = find_weights(Path(path))  # refuses pickle-only checkpoints before transformers sees them
    name = register()
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():  # the routers are "unexpected" for the stock class; reported below instead
            torch_dtype = resolve_dtype(dtype)  # None: the checkpoint's
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype="auto" if torch_dtype is None else torch_dtype,
                attn_implementation=name,
                use_safetensors=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
    except (OSError, ValueError) as err:
        raise SlconvertError(f"transformers could not load {path}: {str(err).splitlines()[0]}") from None
    unexpected = [k for k in info.get("unexpected_keys", []) if ROUTER_ATTRIBUTE not in k]
    missing = [k for k in info.get("missing_keys", []) if ROUTER_ATTRIBUTE not in k]
    if missing:
        raise SlconvertError(f"{path} lacks {len(missing)} weight(s) the model needs, e.g. {missing[0]}; re-save it")
    if unexpected:
        warnings.warn(f"{path}: {len(unexpected)} unused weight(s), e.g. {unexpected[0]}", stacklevel=2)
    attach_superlinear(model, block, weights)
    if device is not None:
        model.to(device)
    warn_if_cpu_cannot_run(model)
    model.eval()
    return model
