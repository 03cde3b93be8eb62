"""Reading a source checkpoint and deciding what a conversion will do, before anything is written.

Every check that can fail on user input runs here (path, config, architecture, layer indices, weights),
so a bad input stops the conversion with one clear line and an untouched file system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from slkernels import SuperlinearConfig

from ..architectures import (
    GENERIC,
    Architecture,
    LayerInfo,
    architecture_for,
    layer_map,
    rope_description,
    supported_list,
)
from ..checkpoint import DTYPES, WeightSet, check_checkpoint, layer_number, read_config
from ..dtypes import SAFETENSORS_FLOATS as FLOAT_NAMES
from ..errors import SlconvertError, first_line
from ..loading import check_block, transformers_config
from ..router import ROUTER_ATTRIBUTE, ROUTER_INITS, initial_router_weight

__all__ = ["AttentionShape", "SourceModel", "ConversionPlan", "open_source", "settle_attention_layers",
           "parse_layer_list", "check_router_init", "plan_layers", "plan_conversion", "check_weights",
           "check_projection_dtypes"]


@dataclass(frozen=True)
class AttentionShape:
    heads_q: int
    heads_kv: int
    head_dim: int
    scaling: float
    rope: str


@dataclass
class SourceModel:
    """A checkpoint directory whose config has been read and whose architecture is known."""

    directory: Path
    raw_config: dict
    config: object  # transformers PreTrainedConfig
    arch: Architecture
    layers: list[LayerInfo]
    weights: WeightSet | None = None  # the safetensors headers (None for a config with no checkpoint behind it)

    @property
    def attention_layers(self) -> list[int]:
        return [layer.index for layer in self.layers if layer.is_attention]

    @cached_property
    def meta_model(self) -> torch.nn.Module:
        """The model built on the meta device: real module tree and shapes, no memory, no weights."""
        from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoModelForCausalLM

        model_type = self.model_type
        if type(self.config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise SlconvertError(
                f"model type {model_type!r} has no causal language model in transformers (an encoder, "
                f"encoder-decoder or other non-causal model); slconvert converts decoder-only causal LMs: "
                f"{supported_list()}, or any "
                f"decoder with attention at {GENERIC.attention_path}"
            )
        try:
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(self.config)
        except Exception as err:  # transformers raises many types for a config it cannot build
            raise SlconvertError(
                f"config.json of {self.directory} is invalid: transformers cannot build its {model_type} model "
                f"({first_line(err)}); fix config.json or re-download the checkpoint"
            ) from None

    @property
    def model_type(self) -> str:
        """The config's own model type (the architecture row may be the generic one)."""
        return str(self.raw_config.get("model_type") or getattr(self.config, "model_type", None) or
                   self.arch.model_type)

    def attention_module(self, layer: int) -> torch.nn.Module:
        path = self.arch.attention_module_path(layer)
        try:
            return self.meta_model.get_submodule(path)
        except AttributeError:
            raise SlconvertError(
                f"unsupported architecture {self.arch.model_type!r}: layer {layer} has no attention module at {path}; "
                f"supported: {supported_list()}"
            ) from None

    def has_module(self, layer: int) -> bool:
        try:
            self.meta_model.get_submodule(self.arch.attention_module_path(layer))
            return True
        except AttributeError:
            return False

    def layer_module(self, layer: int) -> torch.nn.Module | None:
        head = self.arch.attention_path.split("{i}")[0] + str(layer)
        try:
            return self.meta_model.get_submodule(head)
        except AttributeError:
            return None

    def attention_shape(self, layer: int) -> AttentionShape:
        module = self.attention_module(layer)
        missing = [n for n in (self.arch.q_proj, self.arch.k_proj, self.arch.v_proj) if not hasattr(module, n)]
        if missing:
            raise SlconvertError(
                f"layer {layer}'s attention ({type(module).__name__}) has no plain projection(s) {missing}; "
                "latent or fused attention cannot be converted faithfully"
            )
        if any(hasattr(module, name) for name in ("sinks", "attention_sinks")):
            raise SlconvertError(
                f"layer {layer}'s attention uses learned attention sinks, which Superlinear attention does not model"
            )
        config = self.arch.language_config(self.config)
        heads_q = int(config.num_attention_heads)
        heads_kv = int(getattr(config, "num_key_value_heads", None) or heads_q)
        head_dim = int(getattr(module, "head_dim", 0) or getattr(config, "head_dim", 0) or config.hidden_size // heads_q)
        scaling = float(getattr(module, "scaling", head_dim**-0.5))
        return AttentionShape(heads_q, heads_kv, head_dim, scaling, rope_description(self.arch, self.config))

    def check_not_shared(self, layers: list[int]) -> None:
        seen: dict[int, int] = {}
        for layer in layers:
            key = id(self.attention_module(layer))
            if key in seen:
                raise SlconvertError(
                    f"layers {seen[key]} and {layer} share one attention module; a shared module cannot be "
                    "converted faithfully (one router would serve several caches)"
                )
            seen[key] = layer


def open_source(path) -> SourceModel:
    """Validate a model directory and read its config, architecture and safetensors headers (no tensor is read)."""
    directory = Path(path)
    raw = read_config(directory)
    model_type = raw.get("model_type")
    arch = architecture_for(model_type)
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise SlconvertError(
            f"unsupported architecture {model_type!r}: this transformers version does not know it "
            f"(remote code is never run); supported: {supported_list()}"
        )
    weights = check_checkpoint(directory)  # before transformers reads the config: a layer count the weights can fill
    config = transformers_config(directory, model_type)
    layers = layer_map(arch, config)
    if not layers:
        raise SlconvertError(f"config.json of {directory} describes no layers (num_hidden_layers is 0 or missing)")
    if raw.get("superlinear") is not None:  # an earlier conversion's block: checked as every loader checks it
        check_block(raw["superlinear"], str(directory / "config.json"), layers)
    return settle_attention_layers(SourceModel(directory, raw, config, arch, layers, weights), str(directory))


def settle_attention_layers(source: SourceModel, name: str) -> SourceModel:
    """`source` with its attention layers known: for a model type without a row (GENERIC), a layer counts as
    attention only if the generic module path exists in `source.meta_model`. A model without any is refused in
    one line naming it (`name`)."""
    if source.arch is GENERIC:
        source.layers = [
            LayerInfo(layer.index, layer.kind, layer.label, layer.is_attention and source.has_module(layer.index))
            for layer in source.layers
        ]
    if not source.attention_layers:
        if source.arch is GENERIC:
            raise SlconvertError(
                f"{name}: model type {source.model_type!r} is not a model slconvert can convert: its transformers "
                f"model has no attention module at {GENERIC.attention_path} (slconvert converts decoder-only causal "
                f"LMs laid out that way, with q/k/v/o projections, and the model types {supported_list()})"
            )
        kinds = sorted({layer.label for layer in source.layers})
        raise SlconvertError(
            f"{name} has no softmax attention layers (layer kinds: {', '.join(kinds)}); nothing to convert"
        )
    return source


def parse_layer_list(text: str | None, count: int, option: str) -> list[int] | None:
    """'1,3,5-7' -> [1, 3, 5, 6, 7]; negative indices count from the end. None: the option was not given. An empty
    text or an empty item ('1,,3', '3,') is refused: it is a typo or an unset shell variable, not a choice."""
    if text is None:
        return None
    if not str(text).strip():
        raise SlconvertError(f"{option} is empty; give layer numbers, e.g. 3,7 or 4-9, or leave {option} out")
    chosen: list[int] = []

    def index_of(value: int) -> int:
        index = value + count if value < 0 else value
        if not 0 <= index < count:
            raise SlconvertError(f"{option}: layer index {value} is out of range; the model has layers 0..{count - 1}")
        return index

    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise SlconvertError(f"{option} {text!r} has an empty item; give layer numbers separated by single "
                                 "commas, e.g. 3,7 or 4-9")
        try:
            if "-" in part[1:]:
                lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(lo), int(hi)
            else:
                values = [int(part)]
                lo = hi = None
        except ValueError:
            raise SlconvertError(f"{option} {text!r} is not a list of layer indices; use e.g. 3,7 or 4-9") from None
        if lo is not None:
            if (lo < 0) != (hi < 0):
                raise SlconvertError(
                    f"{option}: range {part!r} mixes a layer counted from the start with one counted from the end; "
                    f"write both ends the same way, e.g. 1-3 or -3--1"
                )
            if lo > hi:
                raise SlconvertError(f"{option}: range {part!r} is reversed (it runs from {lo} down to {hi}); "
                                     f"write {hi}-{lo}")
            for end in (lo, hi):  # both ends in range, so the range is; checked before it is built
                index_of(end)
            values = range(lo, hi + 1)
        for value in values:
            index = index_of(value)
            if index not in chosen:
                chosen.append(index)
    return sorted(chosen)


@dataclass
class ConversionPlan:
    source: SourceModel
    weights: WeightSet
    params: SuperlinearConfig
    layers: list[int]  # converted layer indices
    shapes: dict[int, AttentionShape]
    disk_prefix: dict[int, str]  # layer -> attention module prefix in the checkpoint
    router_init: str = "host_logits"
    seed: int = 0
    dtype: str | None = None  # output float dtype ("BF16", ...) or None to keep
    extra: dict = field(default_factory=dict)

    @property
    def dense_attention_layers(self) -> list[int]:
        return [i for i in self.source.attention_layers if i not in self.layers]

    def router_name(self, layer: int) -> str:
        return f"{self.disk_prefix[layer]}.{ROUTER_ATTRIBUTE}.weight"

    def router_weight(self, layer: int, dtype):
        """The initial router weight of a converted layer (`router_init`, seeded per layer), in `dtype`."""
        shape = self.shapes[layer]
        return initial_router_weight(shape.heads_q, shape.head_dim, init=self.router_init, alpha=shape.scaling,
                                     seed=self.seed, layer=layer, dtype=dtype)


def select_layers(source: SourceModel, layers: str | None, keep_dense: str | None) -> list[int]:
    count = len(source.layers)
    attention = source.attention_layers
    chosen = parse_layer_list(layers, count, "--layers")
    if chosen is None:
        chosen = list(attention)
    for index in chosen:
        if index not in attention:
            raise SlconvertError(
                f"--layers: layer {index} is a {source.layers[index].label} layer, not softmax attention; "
                f"choose among {attention}"
            )
    keep = parse_layer_list(keep_dense, count, "--keep-dense") or []
    for index in keep:
        if index not in attention:
            raise SlconvertError(
                f"--keep-dense: layer {index} is a {source.layers[index].label} layer, not softmax attention; "
                f"choose among {attention}"
            )
    result = [i for i in chosen if i not in keep]
    if not result:
        raise SlconvertError("no layer left to convert after --layers/--keep-dense; keep at least one attention layer")
    return result


def check_router_init(router_init: str, option: str = "--router-init") -> None:
    """Refuse a router init that is not one of ROUTER_INITS, in one line naming `option`."""
    if router_init not in ROUTER_INITS:
        raise SlconvertError(f"unknown {option} {router_init!r}; use one of {', '.join(ROUTER_INITS)}")


def plan_layers(source: SourceModel, layers: str | None,
                keep_dense: str | None) -> tuple[list[int], dict[int, AttentionShape]]:
    """The layers a conversion converts (`select_layers`) and their attention shapes; refuses attention a router
    cannot serve faithfully (no plain projections, learned sinks, one module shared by several layers)."""
    chosen = select_layers(source, layers, keep_dense)
    shapes = {i: source.attention_shape(i) for i in chosen}
    source.check_not_shared(chosen)
    return chosen, shapes


def check_projection_dtypes(source: SourceModel, weights: WeightSet, disk_prefix: dict[int, str]) -> None:
    """Refuse a converted layer whose attention projection is stored as integers (or booleans): transformers would
    cast it to the model's float dtype without a word, and the router would search with keys that are not the
    host's. A quantized checkpoint (quantization_config) stores integers by design; its loader reads them."""
    if getattr(source.config, "quantization_config", None) is not None:
        return
    arch = source.arch
    for layer, prefix in disk_prefix.items():
        for projection in (arch.q_proj, arch.k_proj, arch.v_proj, arch.o_proj):
            name = f"{prefix}.{projection}.weight"
            weight_file = weights.locate(name)
            dtype = weight_file.tensors[name].dtype if weight_file is not None else None  # missing: check_weights
            if dtype is not None and not DTYPES[dtype][0].is_floating_point:
                raise SlconvertError(f"{weight_file.path}: tensor {name} is stored as {dtype}, not as floating point "
                                     f"({', '.join(FLOAT_NAMES)}), so layer {layer}'s attention cannot be converted; "
                                     "re-save the checkpoint with floating-point attention weights")


def check_weights(source: SourceModel, weights: WeightSet) -> None:
    """Refuse, before anything is written, a checkpoint whose tensors (names and shapes, from the safetensors headers
    alone) are not what transformers builds from its config.json: a missing or misshapen tensor would give an output
    that cannot be loaded. transformers' own loading decides, on the meta device (`loading.check_weights_fit`:
    renamed prefixes, merged experts, tied weights and the keys it ignores are its business).

    A conversion is stricter than a load about one kind of unused tensor: those of layers past the last one
    config.json describes (a layer count or pattern cut short) would be copied into the output and never used, and
    the converted model would silently be a shallower one."""
    from ..loading import check_weights_fit

    fit = check_weights_fit(source.directory, weights, source.config, type(source.meta_model))
    if fit is None:
        return
    model_keys, unused = fit
    last = max((n for k in model_keys if (n := layer_number(k)) is not None), default=None)
    beyond = [(n, k) for k in unused if (n := layer_number(k)) is not None and last is not None and n > last]
    if beyond:
        layer, example = max(beyond)
        raise SlconvertError(f"{source.directory}: config.json describes layers 0..{last}, but the checkpoint holds "
                             f"tensors of layers up to {layer} (e.g. {example}); fix the layer count or pattern in "
                             "config.json, or re-download the checkpoint")



def plan_conversion(
    model_dir,
    params: SuperlinearConfig,
    *,
    layers: str | None = None,
    keep_dense: str | None = None,
    router_init: str = "host_logits",
    seed: int = 0,
    dtype: str | None = None,
) -> ConversionPlan:
    """Validate everything about a conversion and return what it will do."""
    check_router_init(router_init)
    source = open_source(model_dir)
    chosen, shapes = plan_layers(source, layers, keep_dense)
    weights = source.weights
    check_weights(source, weights)  # first: a config that describes other layers than the weights hold says so
    names = weights.names()
    disk_prefix: dict[int, str] = {}
    for layer in chosen:
        for prefix in source.arch.disk_candidates(layer):
            if f"{prefix}.{source.arch.q_proj}.weight" in names:
                disk_prefix[layer] = prefix
                break
        else:
            tried = ", ".join(f"{p}.{source.arch.q_proj}.weight" for p in source.arch.disk_candidates(layer))
            raise SlconvertError(
                f"the checkpoint has no query projection for layer {layer} (looked for {tried}); "
                f"it does not match the {source.arch.model_type} layout"
            )
        if f"{disk_prefix[layer]}.{ROUTER_ATTRIBUTE}.weight" in names:
            raise SlconvertError(
                f"{source.directory} is already converted (layer {layer} has a router); convert the original model"
            )
    check_projection_dtypes(source, weights, disk_prefix)
    return ConversionPlan(source, weights, params, chosen, shapes, disk_prefix, router_init, seed, dtype)
