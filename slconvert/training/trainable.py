"""What a training run updates: presets over the architecture's own module map, and LoRA adapters.

Presets name groups of modules, found through the model's `Architecture` row (attention modules carry a
router once converted; sequence mixers sit at the row's `mixer_path` in the layers of its `mixer_kinds`),
so no preset branches on a model type:

* ``router``: the routers of the converted layers;
* ``attention``: every parameter of the converted attention modules (projections, norms, routers);
* ``mixers``: ``attention`` plus every sequence mixer (Mamba-2, linear attention, short convolutions). A
  converted model retrieves only if the tokens its router scores carry what their span holds; the mixers
  are what writes that content forward, so they train with the attention. MoE, MLPs and embeddings stay
  frozen;
* ``all``: everything;
* ``lora``: LoRA adapters (peft) on the linear layers of the converted attention modules and the mixers
  (and, with ``lora.mlp``, of every other block), with routers and norms fully trainable. The frozen base
  weights keep the checkpoint's dtype, which is what lets a 30B model train on one or two GPUs; written
  models are merged (`merged_state_dict`), so `slconvert.load` opens them like any other;
* a list of fnmatch patterns over parameter names (``*.self_attn.*``).
"""

from __future__ import annotations

import difflib
import fnmatch
import re

import torch

from ..architectures import architecture_for
from ..errors import SlconvertError
from ..router import ROUTER_ATTRIBUTE, routers

__all__ = ["preset_modules", "select_trainable", "check_patterns", "apply_lora", "is_lora", "merged_state_dict",
           "LORA_ADAPTER_DIR"]

# Sub-folder of a written model that holds the LoRA adapter (peft's own files) beside the merged weights.
LORA_ADAPTER_DIR = "lora-adapter"
_NORM_WORDS = ("norm",)


def _converted_attention_modules(model) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(getattr(module, ROUTER_ATTRIBUTE, None), torch.nn.Module)}


def _mixer_modules(model) -> dict[str, torch.nn.Module]:
    arch = architecture_for(model.config.model_type)
    paths = arch.mixer_module_paths(model.config)
    if not paths:
        raise SlconvertError(f"no sequence mixers are described for model type {model.config.model_type!r}; use "
                             "trainable: attention, all, or a list of parameter name patterns")
    return {path: model.get_submodule(path) for path in paths}


def preset_modules(model, preset: str) -> dict[str, torch.nn.Module]:
    """The modules a module-level preset (attention, mixers) trains, by in-memory path."""
    modules = _converted_attention_modules(model)
    if preset == "mixers":
        modules.update(_mixer_modules(model))
    elif preset != "attention":
        raise SlconvertError(f"preset {preset!r} is not a module preset; use attention or mixers")
    return modules


def _names_of(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def _name_sample(names: list[str], pattern: str, count: int = 3) -> list[str]:
    """A few parameter names to show beside a pattern that matches none: those with a part (between dots) close to
    a word of the pattern (a typo, or a module's name without the wildcards around it), else names spread over
    the model."""
    parts = {part for name in names for part in name.split(".")}
    like = {close for word in re.findall(r"[A-Za-z_]\w*", pattern)
            for close in difflib.get_close_matches(word, parts, n=2, cutoff=0.8)}
    pool = [name for name in names if like.intersection(name.split("."))] or names
    return pool[::max(1, len(pool) // count)][:count]


def _matches(names: list[str], pattern: str) -> set[str]:
    """The names an fnmatch pattern of `trainable` selects; one that selects none is refused in one line."""
    hits = {name for name in names if fnmatch.fnmatchcase(name, pattern)}
    if not hits:
        sample = ", ".join(map(repr, _name_sample(names, pattern)))
        raise SlconvertError(f"trainable pattern {pattern!r} matches no parameter (the model's {len(names)} names "
                             f"include {sample}); fix the pattern (fnmatch over whole names, e.g. '*.self_attn.*')")
    return hits


def check_patterns(model, patterns: list[str]) -> None:
    """Refuse a pattern of `trainable` that selects no parameter of `model` (the layout is enough: a model on the
    meta device, so that the line comes before the weights load)."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        _matches(names, pattern)


def select_trainable(model, trainable) -> list[str]:
    """Freeze everything but the chosen parameters; return the names of the trainable ones (module docstring).

    ``lora`` is applied by `apply_lora`, which wraps the model; here it is refused.
    """
    names = [name for name, _ in model.named_parameters()]
    if trainable == "all":
        chosen = set(names)
    elif trainable == "router":
        chosen = _names_of(model, (p for r in routers(model).values() for p in r.parameters()))
    elif trainable in ("attention", "mixers"):
        chosen = _names_of(model, (p for m in preset_modules(model, trainable).values() for p in m.parameters()))
    elif trainable == "lora":
        raise SlconvertError("trainable: lora wraps the model with adapters; call apply_lora instead")
    else:
        chosen = set().union(*(_matches(names, pattern) for pattern in trainable))
    if not chosen:
        raise SlconvertError(f"trainable={trainable!r} selects no parameter; is the model converted?")
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    return [name for name in names if name in chosen]


# ----- LoRA ---------------------------------------------------------------------------------------------


def _lora_targets(model, mlp: bool) -> list[str]:
    """Full names of the nn.Linear modules that get adapters (never the router, the embeddings or the head)."""
    attention = [prefix + "." for prefix in _converted_attention_modules(model)]
    mixers = [prefix + "." for prefix in _mixer_modules(model)]
    skip = set(architecture_for(model.config.model_type).mixer_lora_skip)
    head = model.get_output_embeddings()
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head or ROUTER_ATTRIBUTE in name:
            continue
        in_attention = any(name.startswith(prefix) for prefix in attention)
        in_mixer = not in_attention and any(name.startswith(prefix) for prefix in mixers)
        if in_mixer and name.rsplit(".", 1)[-1] in skip:
            continue
        if in_attention or in_mixer or (mlp and name.startswith("model.layers.")):
            targets.append(name)
    if not targets:
        raise SlconvertError("LoRA found no linear layer in the attention or mixer modules of this model; use "
                             "trainable: mixers or attention instead")
    return targets


def apply_lora(model, spec):
    """Wrap `model` with LoRA adapters (peft) per the recipe's `lora` settings; routers and norms train fully.

    Returns the peft model, whose forward is the model's; `merged_state_dict` gives plain weights back.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise SlconvertError("trainable: lora needs the peft package; pip install peft") from None
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=_lora_targets(model, spec.mlp), bias="none")
    wrapped = get_peft_model(model, config)
    for name, param in wrapped.named_parameters():
        leaf = name.lower()
        if "lora_" in leaf:
            continue
        if ROUTER_ATTRIBUTE in name or any(word in leaf for word in _NORM_WORDS):
            param.requires_grad_(True)
    return wrapped


def is_lora(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def merged_state_dict(model, state_dict: dict) -> dict:
    """Plain weights of a LoRA-wrapped model: base + scale * B @ A for every adapted layer, original names.

    Computed beside the model (the adapters stay separate and training can go on); the result has the
    names and dtypes of the checkpoint the model was loaded from, so it saves and loads like one.
    """
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = name[len(prefix):] if name.startswith(prefix) else name
            with torch.no_grad():
                deltas[base + ".weight"] = module.get_delta_weight(module.active_adapters[0])
    merged = {}
    for key, value in state_dict.items():
        if "lora_" in key:
            continue
        name = (key[len(prefix):] if key.startswith(prefix) else key).replace(".base_layer.", ".")
        if name in deltas:
            value = (value.float() + deltas[name].to(value.device, torch.float32)).to(value.dtype)
        merged[name] = value
    return merged
