"""Tiny random checkpoints of every supported hybrid architecture, built offline.

Tests, examples and the evaluation code need real Hugging Face checkpoint directories (config.json,
safetensors, tokenizer, generation config) without touching a model hub. `build_tiny_model` writes one
in well under a second: the real transformers model class with a few-thousand-parameter config, so
every code path (MoE routing, Mamba / linear-attention fallbacks, RoPE, q/k norms, output gates) is
the production one.

Each architecture is a row of data: the config overrides that make it tiny and the layer pattern
(which always holds at least two softmax attention layers, so layer selection can be exercised).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import SlconvertError

__all__ = ["TINY_ARCHITECTURES", "TINY_VOCAB", "build_tiny_model", "build_tokenizer", "tiny_config"]

TINY_VOCAB = 384
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Pieces shared by the rows below.
_HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
_MAMBA2 = {"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_n_groups": 1, "mamba_chunk_size": 16}
_GATED_DELTA = {"linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
                "linear_num_value_heads": 4, "linear_conv_kernel_dim": 4}
_EXPERTS = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}

# model_type -> (config overrides, default layer pattern). In a pattern, "A" is a softmax attention layer;
# other letters are the architecture's own layer kinds, spelled out in `_PATTERN_VALUES`.
_TINY: dict[str, tuple[dict, str]] = {
    "nemotron_h": ({**_HEADS, "mamba_num_heads": 8, "mamba_head_dim": 16, "ssm_state_size": 16, "n_groups": 1,
                    "chunk_size": 16, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
                    "moe_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32}, "MAEA"),
    "jamba": ({**_HEADS, "mamba_d_state": 8, "mamba_dt_rank": 8, "mamba_expand": 2, "mamba_d_conv": 4,
               "num_experts": 4, "num_experts_per_tok": 2, "expert_layer_period": 2, "expert_layer_offset": 1}, "MAMA"),
    "granitemoehybrid": ({**_HEADS, **_MAMBA2, "num_local_experts": 4, "num_experts_per_tok": 2,
                          "shared_intermediate_size": 64, "attention_multiplier": 0.3}, "MAMA"),
    "qwen3_next": ({**_HEADS, **_GATED_DELTA, **_EXPERTS, "shared_expert_intermediate_size": 32}, "LALA"),
    "qwen3_5_moe_text": ({**_HEADS, **_GATED_DELTA, **_EXPERTS, "shared_expert_intermediate_size": 32}, "LALA"),
    "qwen3_5_text": ({**_HEADS, **_GATED_DELTA}, "LALA"),
    "bamba": ({**_HEADS, **_MAMBA2}, "MAMA"),
    "falcon_h1": ({**_HEADS, **_MAMBA2, "mamba_d_ssm": 128}, "HH"),
    "lfm2": ({**_HEADS, "block_auto_adjust_ff_dim": False}, "CACA"),
    "lfm2_moe": ({**_HEADS, "num_dense_layers": 1, **_EXPERTS}, "CACA"),
    "minimax": ({**_HEADS, "num_local_experts": 4, "num_experts_per_tok": 2, "block_size": 16}, "LALA"),
    "olmo_hybrid": ({**_HEADS, "linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 16,
                     "linear_value_head_dim": 32}, "LALA"),
}

# How each architecture spells a layer pattern in its config: model_type -> (field, letter -> value).
_PATTERN_VALUES: dict[str, tuple[str, dict[str, object]]] = {
    "nemotron_h": ("layers_block_type", {"A": "full_attention", "M": "linear_attention", "E": "moe"}),
    "granitemoehybrid": ("layer_types", {"A": "attention", "M": "mamba"}),
    "qwen3_next": ("layer_types", {"A": "full_attention", "L": "linear_attention"}),
    "qwen3_5_moe_text": ("layer_types", {"A": "full_attention", "L": "linear_attention"}),
    "qwen3_5_text": ("layer_types", {"A": "full_attention", "L": "linear_attention"}),
    "lfm2": ("layer_types", {"A": "full_attention", "C": "conv"}),
    "lfm2_moe": ("layer_types", {"A": "full_attention", "C": "conv"}),
    "minimax": ("layer_types", {"A": "full_attention", "L": "linear_attention"}),
    "olmo_hybrid": ("layer_types", {"A": "full_attention", "L": "linear_attention"}),
    # jamba: attention every `attn_layer_period` layers; bamba: a list of indices; falcon_h1: every layer (their
    # letters' values are only names: `_pattern_fields` spells these configs itself).
    "jamba": ("attn_layer_period", {"A": "attention", "M": "mamba"}),
    "bamba": ("attn_layer_indices", {"A": "attention", "M": "mamba"}),
    "falcon_h1": ("", {"H": "hybrid"}),
}

TINY_ARCHITECTURES: tuple[str, ...] = tuple(_TINY)


def _pattern_fields(model_type: str, pattern: str) -> dict:
    field, values = _PATTERN_VALUES[model_type]
    letters = set(values)
    if not pattern or set(pattern) - letters:
        raise SlconvertError(f"layers={pattern!r}: a {model_type} pattern is made of {', '.join(sorted(letters))}")
    if model_type == "jamba":
        # jamba's config holds attention as a period and an offset, so only periodic patterns can be spelled
        first = pattern.find("A")
        period = pattern[first + 1:].find("A") + 1 or len(pattern)
        if first < 0 or pattern != "".join("A" if i % period == first else "M" for i in range(len(pattern))):
            raise SlconvertError(f"layers={pattern!r}: a jamba pattern must hold attention every k layers, "
                                 "from one of the first k (e.g. 'MAMA' or 'MMAMMA')")
        return {"num_hidden_layers": len(pattern), "attn_layer_period": period, "attn_layer_offset": first}
    if model_type == "bamba":
        return {"num_hidden_layers": len(pattern), "attn_layer_indices": [i for i, c in enumerate(pattern) if c == "A"]}
    if not field:
        return {"num_hidden_layers": len(pattern)}
    out = {field: [values[c] for c in pattern]}
    if model_type != "nemotron_h":
        out["num_hidden_layers"] = len(pattern)
    return out


def _resize_pattern(pattern: str, layers: int) -> str:
    """Repeat the default pattern to `layers` layers (it always starts a new cycle at a layer boundary)."""
    return (pattern * (layers // len(pattern) + 1))[:layers]


def tiny_config(model_type: str, *, hidden: int = 64, layers: int | str | None = None, vocab: int = TINY_VOCAB):
    """The transformers config of a tiny `model_type` model.

    layers: None for the default pattern (two softmax attention layers), an int to repeat that pattern to
    this many layers, or a pattern string in the architecture's letters (A = softmax attention).
    """
    from transformers import CONFIG_MAPPING

    if model_type not in _TINY:
        raise SlconvertError(
            f"no tiny fixture for model type {model_type!r}; choose one of {', '.join(TINY_ARCHITECTURES)}"
        )
    overrides, pattern = _TINY[model_type]
    if isinstance(layers, int):
        if layers < 1:
            raise SlconvertError(f"layers={layers} must be >= 1")
        pattern = _resize_pattern(pattern, layers)
    elif isinstance(layers, str):
        pattern = layers
    if hidden % 16 or hidden < 32:
        raise SlconvertError(f"hidden={hidden} must be a multiple of 16 and >= 32")
    kwargs = dict(overrides)
    kwargs.update(_pattern_fields(model_type, pattern))
    # Mamba-2 style mixers need n_heads * d_head == expand * hidden (expand = 2).
    for heads_key, dim_key in (("mamba_n_heads", "mamba_d_head"), ("mamba_num_heads", "mamba_head_dim")):
        if heads_key in kwargs:
            kwargs[dim_key] = 2 * hidden // kwargs[heads_key]
    if "mamba_d_ssm" in kwargs:
        kwargs["mamba_d_ssm"] = 2 * hidden
    kwargs.update(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        vocab_size=vocab,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
    )
    config = CONFIG_MAPPING[model_type](**kwargs)
    return config


_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A long context model reads many tokens and remembers the needle in the haystack.",
    "Superlinear attention selects a few spans of the past and attends to them with a sliding window.",
    "Mamba layers keep a recurrent state; attention layers keep every key and value in the cache.",
    "0123456789 The magic number is 4821937. Remember it. What is the magic number?",
    "def add(a, b):\n    return a + b\n",
]


def build_tokenizer(out_dir, *, vocab: int = TINY_VOCAB, corpus=None, bos: bool = False):
    """Train a byte-level BPE of `vocab` ids on `corpus` (texts; default a small built-in corpus) and save it
    as a fast tokenizer; `bos` prepends <s> to every encoded text.

    Byte-level BPE can encode any text, so evaluation prompts never hit an unknown token. Returns the
    `PreTrainedTokenizerFast`; ids 0-3 are <pad>, <s>, </s>, <unk>; padding is on the left (the only
    padding Superlinear attention supports).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4 if corpus is None else corpus, trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", BOS_ID)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(
    model_type: str,
    out_dir,
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int | str | None = None,
    vocab: int = TINY_VOCAB,
    max_shard_size: str | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a tiny random `model_type` checkpoint (config, safetensors, tokenizer, generation config).

    max_shard_size: e.g. "200KB" to get a sharded checkpoint with a `model.safetensors.index.json`.
    Returns the directory.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    config = tiny_config(model_type, hidden=hidden, layers=layers, vocab=vocab)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out_dir, **kwargs)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False).save_pretrained(
        out_dir
    )
    build_tokenizer(out_dir, vocab=vocab)
    return out_dir


def describe(out_dir) -> dict:
    """A short summary of a tiny checkpoint (model type and layer kinds), handy in test failure messages."""
    config = json.loads((Path(out_dir) / "config.json").read_text())
    return {"model_type": config.get("model_type"), "layers": config.get("num_hidden_layers")}
