"""The untrained starting point of the tiny teacher: config, random weights and a tokenizer, built offline.

The teacher is a NemotronH-style hybrid (Mamba-2, softmax attention, MoE, softmax attention:
pattern ``MAEA``) small enough to train from scratch in minutes and to evaluate on two CPU cores. Its
tokenizer is a byte-level BPE trained on the same kind of text the needle prompts are made of (the
built-in pseudo-English haystack, the needle templates and their keys and values), so that a 256-token
prompt is mostly haystack rather than template. A BOS token is prepended to every encoded text, as the
training samples do.

    python -m slconvert.assets.teacher OUT_DIR     # then: slconvert train recipes/tiny-teacher.yaml --model OUT_DIR
    python -m slconvert.assets.teacher OUT_DIR --size study    # the conversion study's larger teacher
                                                   # (recipes/study-teacher.yaml, `make study-teacher`)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

from ..tiny import BOS_ID, EOS_ID, PAD_ID, build_tokenizer, tiny_config

__all__ = ["TEACHER_VOCAB", "TEACHER_LAYERS", "TEACHER_SHAPE", "TEACHER_SIZES", "teacher_config",
           "build_teacher_tokenizer", "build_untrained_teacher"]

TEACHER_VOCAB = 1024
# M = Mamba-2, A = softmax attention, E = MoE. Four layers keep a training step at 256 tokens near 0.2 s on
# two CPU cores; two attention layers are what retrieval (and the conversion) need.
TEACHER_LAYERS = "MAEA"
# Config fields of the teacher beyond `tiny_config("nemotron_h", hidden=256, layers=TEACHER_LAYERS)`.
TEACHER_SHAPE = {
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 256,
    "moe_shared_expert_intermediate_size": 256,
    "max_position_embeddings": 8192,
}
# Teacher sizes as data: size -> (hidden size, layer pattern, config fields beyond `tiny_config`).
# "study": the conversion study's teacher, NemotronH-shaped with several Mamba-2, MoE and attention layers (the
# Nemotron-3-Nano order M E M E A), about 27M parameters, trained dense at 4K-8K tokens by
# recipes/study-teacher.yaml so that its own retrieval holds to 8K and beyond.
TEACHER_SIZES = {
    "tiny": (256, TEACHER_LAYERS, TEACHER_SHAPE),
    "study": (512, "MEMEAMEMEAMEMEA", {
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 256,
        "moe_shared_expert_intermediate_size": 256,
        "max_position_embeddings": 32768,
    }),
}


def teacher_config(size: str = "tiny"):
    """The teacher's transformers config (NemotronH, vocab 1024); `size` is a key of TEACHER_SIZES."""
    if size not in TEACHER_SIZES:
        raise ValueError(f"unknown teacher size {size!r}; use one of {', '.join(TEACHER_SIZES)}")
    hidden, layers, shape = TEACHER_SIZES[size]
    config = tiny_config("nemotron_h", hidden=hidden, layers=layers, vocab=TEACHER_VOCAB)
    for key, value in shape.items():
        setattr(config, key, value)
    return config


def _tokenizer_corpus(seed: int) -> list[str]:
    """Haystack sentences plus needle prompts, the text the teacher will read."""
    from ..tasks.haystack import SyntheticHaystack
    from ..tasks.niah import TEMPLATES, VALUE_KINDS

    rng = random.Random(seed)
    texts = [p for p in SyntheticHaystack(seed).text(200_000).split("\n\n") if p.strip()]
    for template in TEMPLATES.values():
        for kind, (make, singular, plural) in VALUE_KINDS.items():
            for _ in range(50):
                key = VALUE_KINDS["words"][0](rng) if kind != "words" else VALUE_KINDS["numbers"][0](rng)
                value = make(rng)
                texts.append(template.header.format(plural=plural)
                             + template.needle.format(plural=plural, key=key, value=value)
                             + template.question_one.format(singular=singular, keys=key) + " " + value)
    return texts


def build_teacher_tokenizer(out_dir, *, vocab: int = TEACHER_VOCAB, seed: int = 0):
    """Train and save the teacher's byte-level BPE; ids 0-3 are <pad>, <s>, </s>, <unk>, padding on the left.

    Digits are never merged with letters (the byte-level pre-tokenizer splits numbers off), so a value is
    encoded the same way in its needle and in the answer.
    """
    return build_tokenizer(out_dir, vocab=vocab, corpus=_tokenizer_corpus(seed), bos=True)


def build_untrained_teacher(out_dir, *, seed: int = 0, size: str = "tiny") -> Path:
    """Write the randomly initialized teacher (config, safetensors, tokenizer, generation config) to out_dir."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(teacher_config(size), dtype=torch.float32)
    model.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                     do_sample=False).save_pretrained(out_dir)
    build_teacher_tokenizer(out_dir, seed=seed)
    return out_dir


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m slconvert.assets.teacher",
                                     description="Write the untrained teacher (random weights, tokenizer) to OUT_DIR.")
    parser.add_argument("out_dir", nargs="?", metavar="OUT_DIR",
                        help="a new or empty folder (default: SIZE-teacher-init)")
    parser.add_argument("--size", choices=sorted(TEACHER_SIZES), default="tiny",
                        help="tiny: the shipped teacher's shape; study: the conversion study's larger teacher")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the tokenizer's corpus")
    args = parser.parse_args(argv)
    out = Path(args.out_dir or f"{args.size}-teacher-init")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        sys.exit(f"error: {out} exists and is not an empty folder; choose a new OUT_DIR")
    target = build_untrained_teacher(out, seed=args.seed, size=args.size)
    print(f"untrained {args.size} teacher written to {target}")


if __name__ == "__main__":
    main()
