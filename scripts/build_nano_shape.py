#!/usr/bin/env python3
"""Build a checkpoint with the shape of NVIDIA-Nemotron-3-Nano-30B-A3B and random weights; nothing is downloaded.

52 layers (23 Mamba-2, 23 MoE with 6 of N routed experts per token plus a shared one, 6 attention layers with
32 query / 2 KV heads of 128), hidden size 2688, vocabulary 131072, bf16, built directly on the device. With the
real model's 128 experts it holds 31.6B parameters (63 GB); it fits on one H200. Fewer experts keep the compute
per token of the real model (every token still reaches 6) and shrink the weights by about 2 x 2688 x 1856
parameters per expert and MoE layer. The tokenizer is slconvert's small byte-level BPE (slconvert.tiny.build_tokenizer):
the model sees random token ids anyway.

    python scripts/build_nano_shape.py OUT [--experts N] [--device cuda] [--convert CONVERTED]

An OUT that already holds a config.json is reused (--force rebuilds it). --convert also writes the conversion
of OUT with the paper's released setting (the defaults of `slconvert convert`) to CONVERTED.
--hidden / --vocab / --layers shrink the model for quick checks on a CPU (same layer kinds and head shapes;
no longer the Nano shape).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Layer kinds of NVIDIA-Nemotron-3-Nano-30B-A3B in order: M = Mamba-2, E = MoE, A = attention.
NANO_PATTERN = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME".replace("*", "A")
NANO_HIDDEN = 2688
NANO_VOCAB = 131072
NANO_EXPERTS = 128
# Config values on top of slconvert.tiny.tiny_config("nemotron_h", ...); n_routed_experts comes from --experts.
NANO_VALUES = dict(num_attention_heads=32, num_key_value_heads=2, head_dim=128, mamba_num_heads=64,
                   mamba_head_dim=64, ssm_state_size=128, n_groups=8, chunk_size=128, conv_kernel=4,
                   intermediate_size=1856, moe_intermediate_size=1856, moe_shared_expert_intermediate_size=3712,
                   num_experts_per_tok=6, n_shared_experts=1, routed_scaling_factor=2.5,
                   max_position_embeddings=1 << 20)


def nano_config(experts: int = NANO_EXPERTS, *, hidden: int = NANO_HIDDEN, vocab: int = NANO_VOCAB,
                layers: int | None = None):
    """The transformers config: the Nano shape, with `experts` routed experts per MoE layer.

    layers: keep only the first `layers` layers of the pattern (quick checks; None: all 52)."""
    from slconvert.tiny import tiny_config

    pattern = NANO_PATTERN if layers is None else NANO_PATTERN[:layers]
    config = tiny_config("nemotron_h", hidden=hidden, layers=pattern, vocab=vocab)
    for key, value in {**NANO_VALUES, "n_routed_experts": experts}.items():
        setattr(config, key, value)
    return config


def routed_expert_parameters(config) -> int:
    """Parameters one routed expert adds to a MoE layer: its up and down projections and its router row."""
    return 2 * config.hidden_size * config.moe_intermediate_size + config.hidden_size


def build(out, *, experts: int = NANO_EXPERTS, device: str = "cuda", dtype: str = "bfloat16", hidden: int = NANO_HIDDEN,
          vocab: int = NANO_VOCAB, layers: int | None = None, seed: int = 0) -> dict:
    """Build the model on `device` and save it with a tokenizer and generation config to `out`; returns sizes."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from slconvert.dtypes import parse_dtype
    from slconvert.tiny import BOS_ID, EOS_ID, PAD_ID, build_tokenizer

    out = Path(out)
    config = nano_config(experts, hidden=hidden, vocab=vocab, layers=layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype))
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False).save_pretrained(out)
    build_tokenizer(out)
    moe_layers = config.layers_block_type.count("moe")
    full = params + moe_layers * (NANO_EXPERTS - experts) * routed_expert_parameters(config)
    element = parse_dtype(dtype).itemsize
    del model
    return {"parameters": params, "bytes": params * element, "parameters_with_all_experts": full,
            "bytes_with_all_experts": full * element}


def convert_released(source, out, *, force: bool = False) -> dict:
    """`slconvert convert SOURCE OUT` with the released setting; returns the checkpoint's superlinear block."""
    from slkernels import SuperlinearConfig

    from slconvert.surgery import convert, plan_conversion

    plan = plan_conversion(source, SuperlinearConfig.released())
    return convert(plan, out, force=force, progress=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="checkpoint directory to write")
    parser.add_argument("--experts", type=int, default=NANO_EXPERTS,
                        help=f"routed experts per MoE layer (default {NANO_EXPERTS}, the real model's: 63 GB)")
    parser.add_argument("--device", default=None, help="where the weights are built (default: cuda when visible)")
    parser.add_argument("--dtype", default="bfloat16", help="weight dtype (default bfloat16)")
    parser.add_argument("--convert", type=Path, default=None, metavar="CONVERTED",
                        help="also write the conversion with the released setting here")
    parser.add_argument("--force", action="store_true", help="rebuild OUT (and CONVERTED) if they exist")
    parser.add_argument("--seed", type=int, default=0)
    shrink = parser.add_argument_group("quick checks (not the Nano shape)")
    shrink.add_argument("--hidden", type=int, default=NANO_HIDDEN)
    shrink.add_argument("--vocab", type=int, default=NANO_VOCAB)
    shrink.add_argument("--layers", type=int, default=None, help="keep the first N layers of the pattern")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from slconvert.errors import SlconvertError, friendly_errors

    with friendly_errors():
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise SlconvertError(f"--device {device}: no CUDA device is visible; pass --device cpu")
        if args.experts < NANO_VALUES["num_experts_per_tok"]:
            raise SlconvertError(f"--experts {args.experts}: at least {NANO_VALUES['num_experts_per_tok']} "
                                 "(every token reaches 6 experts)")
        if args.layers is not None and not 1 <= args.layers <= len(NANO_PATTERN):
            raise SlconvertError(f"--layers {args.layers}: between 1 and {len(NANO_PATTERN)}")
        if args.convert is not None and "A" not in NANO_PATTERN[:args.layers]:
            raise SlconvertError(f"the first {args.layers} layers hold no attention layer to convert; "
                                 f"the first one is layer {NANO_PATTERN.index('A')}")
        if (args.out / "config.json").is_file() and not args.force:
            print(f"reusing {args.out}")
        else:
            if args.out.exists() and not args.force:
                raise SlconvertError(f"{args.out} exists and holds no config.json; pass --force or another path")
            start = time.time()
            sizes = build(args.out, experts=args.experts, device=device, dtype=args.dtype, hidden=args.hidden,
                          vocab=args.vocab, layers=args.layers, seed=args.seed)
            gib = 2.0**30
            print(f"built {args.out} on {device} in {time.time() - start:.0f} s: {sizes['parameters'] / 1e9:.2f}B "
                  f"parameters ({sizes['bytes'] / gib:.1f} GiB {args.dtype}); with {NANO_EXPERTS} experts: "
                  f"{sizes['parameters_with_all_experts'] / 1e9:.2f}B ({sizes['bytes_with_all_experts'] / gib:.1f} GiB), "
                  f"+{(sizes['bytes_with_all_experts'] - sizes['bytes']) / gib:.1f} GiB of weights")
        if args.convert is not None:
            if (args.convert / "config.json").is_file() and not args.force:
                print(f"reusing {args.convert}")
            else:
                start = time.time()
                block = convert_released(args.out, args.convert, force=args.force)
                print(f"converted layers {block['layers']} (W = {block['window']}, released setting) -> "
                      f"{args.convert} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
