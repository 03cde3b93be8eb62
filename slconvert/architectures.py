"""Hybrid architectures described as data: where the softmax attention layers are and what they look like.

Model surgery never branches on a model type. Everything it needs to know about an architecture is one
`Architecture` row below:

* which config attribute lists the layer kinds, and which of those kinds are softmax attention;
* the attention module's path in memory (``model.layers.{i}.self_attn``) and the prefixes it may carry on
  disk (``backbone.layers.{i}.mixer`` for NemotronH checkpoints in their original layout);
* the projection and norm names, whether the layer uses RoPE (and which config field says so), whether the
  query projection also emits an output gate;
* modules shared between layers (which make a faithful per-layer conversion impossible);
* the sequence mixers (Mamba-2, linear attention, short convolutions): which layer kinds hold one and the
  module's path, so that training presets such as `mixers` find them without knowing the model type.

Architectures whose attention cannot be converted faithfully are listed in `REFUSED` with the reason, and
an unknown model type falls back to the generic Llama-like description (`model.layers.{i}.self_attn`,
q/k/v/o projections) which the conversion then verifies against the checkpoint's tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SlconvertError

__all__ = ["Architecture", "ARCHITECTURES", "REFUSED", "GENERIC", "architecture_for", "LayerInfo", "layer_map"]


@dataclass(frozen=True)
class Architecture:
    """How one model type lays out its softmax attention (see the module docstring)."""

    model_type: str
    # Sub-config holding the language model's fields (multimodal checkpoints: "text_config"); None: the config.
    config_section: str | None = None
    # Config attribute (on the transformers config object) listing one kind per layer; None: every layer
    # is a softmax attention layer (plain decoder).
    layer_kinds: str | None = "layer_types"
    attention_kinds: frozenset = frozenset({"full_attention"})
    # Friendlier names for the other layer kinds in `slconvert inspect`.
    kind_labels: dict = field(default_factory=dict)
    attention_path: str = "model.layers.{i}.self_attn"
    disk_prefixes: tuple = ("model.layers.{i}.self_attn",)
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    q_norm: str | None = None
    k_norm: str | None = None
    # "rope": always rotary; "none": never; "optional": rotary when config.<rope_field> == "rope".
    rope: str = "rope"
    rope_field: str | None = None
    output_gate: bool = False
    shared_modules: tuple = ()
    # Sequence mixers: the module at `mixer_path` in every layer whose kind is in `mixer_kinds`; None: none
    # described (training presets that need them refuse the model).
    mixer_path: str | None = None
    mixer_kinds: frozenset = frozenset({"linear_attention"})
    # Linear layers of a mixer that LoRA must leave alone: the fused Mamba kernels read `out_proj.weight`
    # directly instead of calling the module, so an adapter there would be silently bypassed.
    mixer_lora_skip: tuple = ()
    description: str = ""

    def language_config(self, config):
        """The (sub-)config that holds the language model's fields."""
        if self.config_section is None:
            return config
        section = getattr(config, self.config_section, None)
        if section is None:
            raise SlconvertError(f"config.json of this {self.model_type} model has no {self.config_section!r}")
        return section

    def attention_module_path(self, layer: int) -> str:
        return self.attention_path.format(i=layer)

    def mixer_module_paths(self, config) -> list[str]:
        """In-memory paths of every sequence-mixer module of a model with this config (may be empty)."""
        if self.mixer_path is None:
            return []
        return [self.mixer_path.format(i=info.index) for info in layer_map(self, config)
                if info.kind in self.mixer_kinds]

    def disk_candidates(self, layer: int) -> list[str]:
        """Prefixes the layer's attention tensors may carry in a checkpoint, most likely first."""
        seen: list[str] = []
        for prefix in (*self.disk_prefixes, self.attention_path):
            name = prefix.format(i=layer)
            if name not in seen:
                seen.append(name)
        return seen


_MAMBA = {"linear_attention": "mamba2", "mamba": "mamba"}
# Where each family keeps its sequence mixer, and which layer kinds have one.
_MAMBA_MIXER = {"mixer_path": "model.layers.{i}.mamba", "mixer_kinds": frozenset({"linear_attention", "mamba"}),
                "mixer_lora_skip": ("out_proj",)}
_LINEAR_ATTN = {"mixer_path": "model.layers.{i}.linear_attn"}
_GDN = {"linear_attention": "gated_deltanet"}
# Qwen3.5 checkpoints are multimodal on disk (language model under model.language_model).
_QWEN35_PREFIXES = ("model.language_model.layers.{i}.self_attn", "model.layers.{i}.self_attn")
# Field groups shared by a family's rows.
_QK_NORMS = {"q_norm": "q_norm", "k_norm": "k_norm"}
_GATED_GDN = {"kind_labels": _GDN, **_QK_NORMS, "output_gate": True, **_LINEAR_ATTN}  # Gated DeltaNet + gated attention
_QWEN35 = {**_GATED_GDN, "disk_prefixes": _QWEN35_PREFIXES}
_LFM2 = {"kind_labels": {"conv": "short_conv"}, "o_proj": "out_proj", "q_norm": "q_layernorm",
         "k_norm": "k_layernorm", "mixer_path": "model.layers.{i}.conv", "mixer_kinds": frozenset({"conv"})}

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture(
            "nemotron_h",
            layer_kinds="layers_block_type",
            kind_labels={"linear_attention": "mamba2", "moe": "moe", "mlp": "mlp"},
            attention_path="model.layers.{i}.mixer",
            disk_prefixes=("backbone.layers.{i}.mixer", "model.layers.{i}.mixer"),
            rope="none",
            mixer_path="model.layers.{i}.mixer",
            mixer_kinds=frozenset({"linear_attention", "mamba"}),
            mixer_lora_skip=("out_proj",),
            description="NVIDIA Nemotron-H / Nemotron-3: Mamba-2, MoE and attention blocks, no RoPE",
        ),
        Architecture(
            "jamba",
            layer_kinds="layers_block_type",
            attention_kinds=frozenset({"attention"}),
            rope="none",
            **_MAMBA_MIXER,
            description="AI21 Jamba: Mamba + attention every attn_layer_period layers, MoE MLPs, no RoPE",
        ),
        Architecture(
            "granitemoehybrid",
            kind_labels=_MAMBA,
            attention_kinds=frozenset({"full_attention", "attention"}),
            rope="optional",
            rope_field="position_embedding_type",
            **_MAMBA_MIXER,
            description="IBM Granite-4 hybrid: Mamba-2 + attention (scale = attention_multiplier), MoE",
        ),
        Architecture(
            "bamba",
            layer_kinds="layers_block_type",
            kind_labels=_MAMBA,
            **_MAMBA_MIXER,
            description="Bamba: Mamba-2 + attention at attn_layer_indices, partial RoPE",
        ),
        Architecture(
            "falcon_h1",
            layer_kinds="layers_block_type",
            attention_kinds=frozenset({"hybrid"}),
            kind_labels={"hybrid": "attention+mamba2"},
            mixer_path="model.layers.{i}.mamba",
            mixer_kinds=frozenset({"hybrid"}),
            mixer_lora_skip=("out_proj",),
            description="Falcon-H1: attention and Mamba-2 side by side in every layer",
        ),
        Architecture(
            "qwen3_next",
            **_GATED_GDN,
            description="Qwen3-Next: Gated DeltaNet + gated attention (q/k norms, partial RoPE), MoE",
        ),
        Architecture(
            "qwen3_5_moe_text",
            **_QWEN35,
            description="Qwen3.5 MoE (text): Gated DeltaNet + gated attention, MoE",
        ),
        Architecture(
            "qwen3_5_moe",
            config_section="text_config",
            **_QWEN35,
            description="Qwen3.5 MoE (multimodal checkpoint; its language model is converted, vision weights kept)",
        ),
        Architecture(
            "qwen3_5_text",
            **_QWEN35,
            description="Qwen3.5 (text): Gated DeltaNet + gated attention",
        ),
        Architecture(
            "qwen3_5",
            config_section="text_config",
            **_QWEN35,
            description="Qwen3.5 (multimodal checkpoint; its language model is converted, vision weights kept)",
        ),
        Architecture(
            "lfm2",
            **_LFM2,
            description="Liquid LFM2: short convolutions + attention with q/k norms",
        ),
        Architecture(
            "lfm2_moe",
            **_LFM2,
            description="Liquid LFM2-MoE: short convolutions + attention, MoE MLPs",
        ),
        Architecture(
            "minimax",
            kind_labels={"linear_attention": "lightning_attention"},
            mixer_path="model.layers.{i}.self_attn",
            description="MiniMax-01: lightning (linear) attention + softmax attention, MoE",
        ),
        Architecture(
            "olmo_hybrid",
            kind_labels=_GDN,
            **_QK_NORMS,
            **_LINEAR_ATTN,
            description="OLMo hybrid: Gated DeltaNet + attention",
        ),
    )
}

GENERIC = Architecture(
    "generic",
    layer_kinds="layer_types",
    description="any decoder whose attention is model.layers.{i}.self_attn with q/k/v/o projections",
)

# Model types whose attention cannot be converted faithfully, and why.
REFUSED: dict[str, str] = {
    "kimi_linear": "its attention is multi-head latent attention (the KV cache holds a compressed latent, "
    "not per-head keys), which Superlinear span selection cannot address",
    "bailing_hybrid": "its attention is multi-head latent attention (the KV cache holds a compressed latent)",
    "deepseek_v3": "its attention is multi-head latent attention (the KV cache holds a compressed latent)",
    "deepseek_v2": "its attention is multi-head latent attention (the KV cache holds a compressed latent)",
    "zamba": "one attention module is shared by several layers, so one router cannot serve each layer's cache",
    "zamba2": "one attention module is shared by several layers, so one router cannot serve each layer's cache",
    "gpt_oss": "its attention uses learned sinks, which Superlinear attention's softmax does not model",
    "recurrent_gemma": "its attention is a local sliding-window block with no global softmax layer to convert",
}


def architecture_for(model_type: str | None) -> Architecture:
    """The row for `model_type`; the generic description for unknown decoders; an error for refused ones."""
    if model_type is None or model_type == "":
        raise SlconvertError("config.json has no model_type; this is not a transformers checkpoint")
    if not isinstance(model_type, str):
        raise SlconvertError(f"config.json: 'model_type' is {model_type!r}, not a model type name such as "
                             "\"nemotron_h\"; repair config.json or re-download the checkpoint")
    if model_type in REFUSED:
        raise SlconvertError(f"cannot convert model type {model_type!r}: {REFUSED[model_type]}")
    return ARCHITECTURES.get(model_type, GENERIC)


def supported_list() -> str:
    return ", ".join(sorted(ARCHITECTURES))


@dataclass(frozen=True)
class LayerInfo:
    index: int
    kind: str  # the config's own value
    label: str  # friendlier name for display
    is_attention: bool


def layer_map(arch: Architecture, config) -> list[LayerInfo]:
    """One entry per decoder layer, read from the transformers config object."""
    config = arch.language_config(config)
    count = int(getattr(config, "num_hidden_layers", 0) or 0)
    kinds = None
    if arch.layer_kinds is not None:
        kinds = getattr(config, arch.layer_kinds, None)
    if kinds is None:
        if arch is not GENERIC and arch.layer_kinds is not None:
            raise SlconvertError(
                f"config.json of this {arch.model_type} model has no {arch.layer_kinds!r}; the checkpoint is incomplete"
            )
        kinds = ["full_attention"] * count
    kinds = list(kinds)
    return [
        LayerInfo(i, str(kind), arch.kind_labels.get(str(kind), str(kind)), str(kind) in arch.attention_kinds)
        for i, kind in enumerate(kinds)
    ]


def rope_description(arch: Architecture, config) -> str:
    """'none', 'full' or 'partial (0.25)' for the attention layers of this config."""
    config = arch.language_config(config)
    if arch.rope == "none":
        return "none"
    if arch.rope == "optional" and getattr(config, arch.rope_field or "", None) != "rope":
        return "none"
    fraction = getattr(config, "partial_rotary_factor", None)
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        nested = params.get("full_attention") if isinstance(params.get("full_attention"), dict) else params
        fraction = nested.get("partial_rotary_factor", fraction)
    if fraction is None or float(fraction) >= 1.0:
        return "full"
    return f"partial ({float(fraction):g})"
