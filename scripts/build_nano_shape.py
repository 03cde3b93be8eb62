#!/usr/bin/env python3
"""Build a model with the shape of NVIDIA-Nemotron-3-Nano-30B-A3B and random weights, then benchmark it converted
in memory or write it as a checkpoint; nothing is downloaded.

52 layers (23 Mamba-2, 23 MoE with 6 of N routed experts per token plus a shared one, 6 attention layers with
32 query / 2 KV heads of 128), hidden size 2688, vocabulary 131072, bf16, built directly on the device. With the
real model's 128 experts it holds 31.6B parameters (63 GB); it fits on one H200. Fewer experts keep the compute
per token of the real model (every token still reaches 6) and shrink the weights by about 2 x 2688 x 1856
parameters per expert and MoE layer. The tokenizer is slconvert's small byte-level BPE (slconvert.tiny.build_tokenizer):
the model sees random token ids anyway.

    python scripts/build_nano_shape.py --bench OUT_DIR [--experts N] [--lengths 32K,128K,1M] [bench options]
    python scripts/build_nano_shape.py OUT [--experts N] [--device cuda] [--convert CONVERTED]

--bench writes no checkpoint: it builds the model on the GPU, converts it there with the paper's released
setting (as `slconvert convert` + `slconvert.load` would: slconvert.benchmark.model.convert_in_memory) and
runs the whole-model benchmark of `slconvert bench --model` on it (--lengths, --chunk, --decode-tokens,
--compile/--no-compile, --no-dense as there), writing only model_bench.json/.png/.md to OUT_DIR. It first
prints an estimate of the GPU memory the Superlinear runs need (weights, the KV cache of the longest length,
one prefill chunk's working memory) and refuses to start when the GPU has less free.

With OUT it writes the checkpoint instead; an OUT that already holds a config.json is reused (--force rebuilds
it). --convert also writes the conversion of OUT with the released setting (the defaults of `slconvert convert`)
to CONVERTED, for `slconvert bench --model CONVERTED` or any other use of the checkpoint.
--search-key span_mean converts with the span-mean search key instead of the paper's anchor key (both paths).
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


def build_model(*, experts: int = NANO_EXPERTS, device: str = "cuda", dtype: str = "bfloat16",
                hidden: int = NANO_HIDDEN, vocab: int = NANO_VOCAB, layers: int | None = None, seed: int = 0):
    """The model with random weights (seeded), built directly on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    from slconvert.dtypes import parse_dtype

    config = nano_config(experts, hidden=hidden, vocab=vocab, layers=layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype))
    return model.eval()


def model_sizes(model, dtype: str = "bfloat16") -> dict:
    """Parameters and bytes of `model`, and what they would be with the real model's 128 experts."""
    from slconvert.dtypes import parse_dtype

    config = model.config
    params = sum(p.numel() for p in model.parameters())
    full = params + config.layers_block_type.count("moe") * (NANO_EXPERTS - config.n_routed_experts) * \
        routed_expert_parameters(config)
    element = parse_dtype(dtype).itemsize
    return {"parameters": params, "bytes": params * element, "parameters_with_all_experts": full,
            "bytes_with_all_experts": full * element}


def build(out, *, experts: int = NANO_EXPERTS, device: str = "cuda", dtype: str = "bfloat16", hidden: int = NANO_HIDDEN,
          vocab: int = NANO_VOCAB, layers: int | None = None, seed: int = 0) -> dict:
    """Build the model on `device` and save it with a tokenizer and generation config to `out`; returns sizes."""
    from transformers import GenerationConfig

    from slconvert.tiny import BOS_ID, EOS_ID, PAD_ID, build_tokenizer

    out = Path(out)
    model = build_model(experts=experts, device=device, dtype=dtype, hidden=hidden, vocab=vocab, layers=layers,
                        seed=seed)
    sizes = model_sizes(model, dtype)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False).save_pretrained(out)
    build_tokenizer(out)
    del model
    return sizes


def released_setting(search_key: str = "anchor"):
    """The paper's released setting with the given search key (`slconvert convert`'s defaults and --search-key)."""
    import dataclasses

    from slkernels import SuperlinearConfig

    return dataclasses.replace(SuperlinearConfig.released(), search_key=search_key)


def convert_released(source, out, *, force: bool = False, search_key: str = "anchor") -> dict:
    """`slconvert convert SOURCE OUT [--search-key KEY]` with the released setting; returns the checkpoint's
    superlinear block."""
    from slconvert.surgery import convert, plan_conversion

    plan = plan_conversion(source, released_setting(search_key))
    return convert(plan, out, force=force, progress=True)


def convert_released_in_memory(model, search_key: str = "anchor") -> dict:
    """The same conversion of the live model, in place (nothing written); returns its superlinear block."""
    from slconvert.benchmark.model import convert_in_memory

    return convert_in_memory(model, released_setting(search_key))


# --- GPU memory of the in-memory benchmark ----------------------------------------------------------------------

GIB = float(1 << 30)
WORKSPACE_FACTOR = 2  # allocator slack and the other transients of a chunk, on top of the largest layer's tensors


def memory_estimate(config, dtype: str, lengths: list[int], chunk: int, search_key: str = "anchor") -> dict:
    """Bytes the Superlinear runs of the benchmark need on the device, by part (and "total").

    weights: the model's parameters and buffers (counted on the meta device) and the routers; kv_cache: K and V
    of every attention layer at the longest length; kept_sums: with the span-mean search key, the running sums of
    the keys each converted layer keeps between calls (`slconvert.attention.KEEP_STATE`, from
    `slkernels.state.KEEP_MIN_KEYS` keys); chunk: the working memory of one prefill chunk, taken as
    WORKSPACE_FACTOR x the MoE layer's intermediate tensors (per token: `num_experts_per_tok` copies of the hidden
    state in and out, their float32 weighted sum, two activations of the expert width), the largest of a layer.
    The Mamba-2 states are a few MiB. The dense variant needs more at long lengths (transformers' mask of each
    chunk against the context); where it runs out of memory the benchmark records it."""
    import torch
    from slkernels import state
    from slkernels.triton_ops.prefix import KeySums
    from transformers import AutoModelForCausalLM

    from slconvert.attention import KEEP_STATE
    from slconvert.dtypes import parse_dtype

    element = parse_dtype(dtype).itemsize
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype))
    weights = sum(t.numel() * t.element_size() for t in [*meta.parameters(), *meta.buffers()])
    del meta
    attention = config.layers_block_type.count("full_attention")
    weights += attention * config.num_attention_heads * config.head_dim ** 2 * element
    kv = attention * 2 * config.num_key_value_heads * config.head_dim * max(lengths) * element
    per_token = config.num_experts_per_tok * (2 * config.hidden_size * element + 4 * config.hidden_size
                                              + 2 * config.moe_intermediate_size * element)
    work = WORKSPACE_FACTOR * min(chunk, max(lengths)) * per_token
    kept = 0
    if search_key == "span_mean" and KEEP_STATE and max(lengths) >= state.KEEP_MIN_KEYS:
        kept = attention * KeySums.nbytes(config.num_key_value_heads, config.head_dim, max(lengths))
    return {"weights": weights, "kv_cache": kv, "kept_sums": kept, "chunk": work, "total": weights + kv + kept + work}


def _size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB / 10 else f"{count / (1 << 20):.1f} MiB"


def describe_estimate(estimate: dict, lengths: list[int], chunk: int) -> str:
    from slconvert.benchmark.model import short_length

    kept = f" + {_size(estimate['kept_sums'])} kept span-mean sums" if estimate.get("kept_sums") else ""
    return (f"GPU memory needed (estimate): {_size(estimate['total'])} = {_size(estimate['weights'])} weights + "
            f"{_size(estimate['kv_cache'])} KV cache at {short_length(max(lengths))}{kept} + "
            f"{_size(estimate['chunk'])} for one {short_length(min(chunk, max(lengths)))}-token prefill chunk")


def check_memory(estimate: dict, device: str) -> str:
    """What the device has free, as one line; refuses a CUDA device with less free memory than the estimate.
    CPU runs are not checked."""
    import torch

    from slconvert.benchmark.host import device_name
    from slconvert.errors import SlconvertError

    target = torch.device(device)
    if target.type != "cuda":
        return f"memory not checked on {target.type}"
    free, total = torch.cuda.mem_get_info(target)
    label = f"{device} ({device_name(target)})"
    if free < estimate["total"]:
        raise SlconvertError(f"the benchmark needs about {_size(estimate['total'])} of GPU memory and {label} has "
                             f"{_size(free)} free of {_size(total)}; pass fewer --experts, shorter --lengths or a "
                             "smaller --chunk")
    return f"{label}: {_size(free)} free of {_size(total)}"


def shape_name(experts: int, hidden: int, vocab: int, layers: int | None) -> str:
    """The benchmarked model's name, e.g. nano-shape-128e; a shrunk shape's name says what differs."""
    parts = [f"nano-shape-{experts}e"]
    if hidden != NANO_HIDDEN:
        parts.append(f"h{hidden}")
    if vocab != NANO_VOCAB:
        parts.append(f"v{vocab}")
    if layers is not None and layers != len(NANO_PATTERN):
        parts.append(f"{layers}l")
    return "-".join(parts)


def bench_in_memory(out_dir, cfg, *, experts: int = NANO_EXPERTS, dtype: str = "bfloat16", hidden: int = NANO_HIDDEN,
                    vocab: int = NANO_VOCAB, layers: int | None = None, seed: int = 0,
                    search_key: str = "anchor") -> dict:
    """Build on cfg.device, convert in memory with the released setting, run the whole-model benchmark (settings
    `cfg` from slconvert.commands.bench.model_bench_settings); writes only the benchmark's files to `out_dir`."""
    from slconvert.commands.bench import bench_and_report

    start = time.time()
    model = build_model(experts=experts, device=cfg.device, dtype=dtype, hidden=hidden, vocab=vocab, layers=layers,
                        seed=seed)
    sizes = model_sizes(model, dtype)
    print(f"built in memory on {cfg.device} in {time.time() - start:.0f} s: {sizes['parameters'] / 1e9:.2f}B "
          f"parameters ({sizes['bytes'] / GIB:.1f} GiB {dtype})", flush=True)
    block = convert_released_in_memory(model, search_key)
    print(f"converted layers {block['layers']} in memory (W = {block['window']}, released setting, search key "
          f"{search_key})", flush=True)
    origin = (f"Random {dtype} weights (seed {seed}) built on {cfg.device} and converted there with the released "
              f"setting and the {search_key} search key by scripts/build_nano_shape.py --bench; no checkpoint was "
              "written")
    return bench_and_report(model, cfg, Path(out_dir), name=shape_name(experts, hidden, vocab, layers), origin=origin)


def _parser() -> argparse.ArgumentParser:
    from slkernels.config import SEARCH_KEYS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=None, help="checkpoint directory to write")
    parser.add_argument("--bench", type=Path, default=None, metavar="OUT_DIR",
                        help="write no checkpoint: build, convert in memory and benchmark; results go to OUT_DIR")
    parser.add_argument("--experts", type=int, default=NANO_EXPERTS,
                        help=f"routed experts per MoE layer (default {NANO_EXPERTS}, the real model's: 63 GB)")
    parser.add_argument("--device", default=None, help="where the weights are built (default: cuda when visible)")
    parser.add_argument("--dtype", default="bfloat16", help="weight dtype (default bfloat16)")
    parser.add_argument("--convert", type=Path, default=None, metavar="CONVERTED",
                        help="also write the conversion with the released setting here")
    parser.add_argument("--search-key", choices=SEARCH_KEYS, default="anchor",
                        help="the converted layers' search key (as `slconvert convert --search-key`; default anchor)")
    parser.add_argument("--force", action="store_true", help="rebuild OUT (and CONVERTED) if they exist")
    parser.add_argument("--seed", type=int, default=0)
    bench = parser.add_argument_group("--bench options (as for `slconvert bench --model`)")
    bench.add_argument("--lengths", default=None, help="context lengths, e.g. 32K,128K,1M (the default)")
    bench.add_argument("--chunk", default=None, help="prefill tokens per forward call, e.g. 32K (the default)")
    bench.add_argument("--decode-tokens", type=int, default=None, help="timed decode tokens per length (default 8)")
    bench.add_argument("--profile-decode", type=int, default=None,
                       help="also run N eager decode steps under the profiler (host vs device time, launches, waits)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="also time decode under torch.compile with CUDA graphs (default: on a GPU)")
    bench.add_argument("--no-dense", action="store_true", help="skip the dense-attention baseline")
    shrink = parser.add_argument_group("quick checks (not the Nano shape)")
    shrink.add_argument("--hidden", type=int, default=NANO_HIDDEN)
    shrink.add_argument("--vocab", type=int, default=NANO_VOCAB)
    shrink.add_argument("--layers", type=int, default=None, help="keep the first N layers of the pattern")
    return parser


def _check_shape(args) -> None:
    from slconvert.dtypes import parse_dtype
    from slconvert.errors import SlconvertError

    parse_dtype(args.dtype)
    if args.experts < NANO_VALUES["num_experts_per_tok"]:
        raise SlconvertError(f"--experts {args.experts}: at least {NANO_VALUES['num_experts_per_tok']} "
                             "(every token reaches 6 experts)")
    if args.layers is not None and not 1 <= args.layers <= len(NANO_PATTERN):
        raise SlconvertError(f"--layers {args.layers}: between 1 and {len(NANO_PATTERN)}")
    if args.search_key != "anchor" and args.convert is None and args.bench is None:
        raise SlconvertError(f"--search-key {args.search_key} applies to --convert CONVERTED or --bench OUT_DIR")
    if (args.convert is not None or args.bench is not None) and "A" not in NANO_PATTERN[:args.layers]:
        raise SlconvertError(f"the first {args.layers} layers hold no attention layer to convert; "
                             f"the first one is layer {NANO_PATTERN.index('A')}")


def _bench_main(args) -> None:
    from slconvert.commands.bench import model_bench_settings
    from slconvert.errors import SlconvertError

    writes = [name for name, value in (("OUT", args.out), ("--convert", args.convert), ("--force", args.force))
              if value]
    if writes:
        raise SlconvertError(f"{', '.join(writes)} write a checkpoint; --bench writes none, leave them out")
    cfg = model_bench_settings(None, args.lengths, args.chunk, args.decode_tokens, args.compile, not args.no_dense,
                               args.device, args.dtype, profile_decode=args.profile_decode)
    config = nano_config(args.experts, hidden=args.hidden, vocab=args.vocab, layers=args.layers)
    estimate = memory_estimate(config, args.dtype, cfg.lengths, cfg.chunk, args.search_key)
    print(describe_estimate(estimate, cfg.lengths, cfg.chunk), flush=True)
    print(check_memory(estimate, cfg.device), flush=True)
    bench_in_memory(args.bench, cfg, experts=args.experts, dtype=args.dtype, hidden=args.hidden, vocab=args.vocab,
                    layers=args.layers, seed=args.seed, search_key=args.search_key)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from slconvert.errors import SlconvertError, friendly_errors

    with friendly_errors():
        _check_shape(args)
        if args.bench is not None:
            _bench_main(args)
            return 0
        bench_only = {"--lengths": args.lengths, "--chunk": args.chunk, "--decode-tokens": args.decode_tokens,
                      "--profile-decode": args.profile_decode,
                      "--compile/--no-compile": args.compile, "--no-dense": args.no_dense or None}
        given = [name for name, value in bench_only.items() if value is not None]
        if given:
            raise SlconvertError(f"{', '.join(given)} apply to --bench OUT_DIR")
        if args.out is None:
            raise SlconvertError("give OUT (the checkpoint to write) or --bench OUT_DIR (benchmark without writing it)")
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise SlconvertError(f"--device {device}: no CUDA device is visible; pass --device cpu")
        if (args.out / "config.json").is_file() and not args.force:
            print(f"reusing {args.out}")
        else:
            if args.out.exists() and not args.force:
                raise SlconvertError(f"{args.out} exists and holds no config.json; pass --force or another path")
            start = time.time()
            sizes = build(args.out, experts=args.experts, device=device, dtype=args.dtype, hidden=args.hidden,
                          vocab=args.vocab, layers=args.layers, seed=args.seed)
            print(f"built {args.out} on {device} in {time.time() - start:.0f} s: {sizes['parameters'] / 1e9:.2f}B "
                  f"parameters ({sizes['bytes'] / GIB:.1f} GiB {args.dtype}); with {NANO_EXPERTS} experts: "
                  f"{sizes['parameters_with_all_experts'] / 1e9:.2f}B ({sizes['bytes_with_all_experts'] / GIB:.1f} GiB), "
                  f"+{(sizes['bytes_with_all_experts'] - sizes['bytes']) / GIB:.1f} GiB of weights")
        if args.convert is not None:
            if (args.convert / "config.json").is_file() and not args.force:
                print(f"reusing {args.convert}")
            else:
                start = time.time()
                block = convert_released(args.out, args.convert, force=args.force, search_key=args.search_key)
                print(f"converted layers {block['layers']} (W = {block['window']}, released setting, search key "
                      f"{args.search_key}) -> "
                      f"{args.convert} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
