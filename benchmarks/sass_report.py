"""Compile a Triton kernel of slkernels for Hopper (sm_90) on the CPU and report what the machine code does.

    python benchmarks/sass_report.py KERNEL [--tiles BM,BN,WARPS,STAGES[,REGCAP]] [--length L] [--keep DIR]

KERNEL: ``entry:MODE`` (0 window forward, 1 span forward, 2 delta, 3 dq, 4 fused span dq), ``ws:MODE`` (the
warp-specialised kernels of attend_ws: 0 or 1 forward, 3 span dq, 4 fused span dq; WARPS the default partition's, 4; REGCAP the
launch's, 168), ``dkdv:NJ`` (1 window list, k span lists), ``ws_dkdv:NJ`` (the warp-specialised dk/dv of attend_bwd_ws; BN = keys
per consumer, WARPS 4, REGCAP 168), ``search``, ``search:span_mean`` or ``search:hi_only`` (the span-mean
search's timing loop; BN = anchors per block), ``span_lists`` (BM = rows per program), ``decode`` (the partial
kernel of one decode row, its window chunks by KV head; BN = keys per block of a span, chunks of BN x 8 keys,
STAGES its loop's stages),
``decode:rows`` (the window's chunks by query row and a span's on the CUDA cores, as float32 inputs have them),
``decode:dot`` (a span's chunks on the tensor cores whatever decode.SPAN_DOT says) or ``combine`` (the kernel after it),
``decode:pdl`` / ``combine:pdl`` as decode.DECODE_PDL launches them. Prints registers, spilled stack bytes and shared
memory per program, the instruction mix of the innermost loop that issues tensor-core products (the cost of one
iteration) and the length of every innermost loop (with the instructions behind its forward branches). No GPU is
needed: Triton compiles for the target named here, with the specialisation a launch on the benchmark shape gets
(B=1, H_q=32, H_kv=2, D=128, bf16; pointers and strides divisible by 16, unit strides constant), and `cuobjdump` from
Triton's own package disassembles the result.
Run it under the Triton of the GPU machine (e.g. ``pip install --target DIR triton==3.6.0`` and ``PYTHONPATH=DIR``)
to see what that machine runs. `--keep DIR` writes the TTGIR, PTX and SASS there.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

D, HQ, HKV = 128, 32, 2
G = HQ // HKV
TENSOR_CORE_OPS = ("HGMMA", "HMMA")


def compile_for_sm90(fn, args: dict, consts: dict, warps: int, stages: int, regcap: int | None = None):
    """`args`: a type string for pointers and descriptors, else the value a launch would pass (ints equal to
    1 become constants and multiples of 16 are marked so, as Triton's launcher specialises them)."""
    sig, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name], constexprs[(i,)] = "constexpr", consts[name]
            continue
        value = args[name]
        if isinstance(value, str):
            sig[name] = value
            if value.startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        elif value == 1:
            sig[name], constexprs[(i,)] = "constexpr", 1
        else:
            sig[name] = "i32" if abs(value) < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = dict(num_warps=warps, num_stages=stages, **({"maxnreg": regcap} if regcap else {}))
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource

        source = GluonASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    else:
        source = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def _strides(length: int, heads: int) -> list[int]:
    return [heads * length * D, length * D, D, 1]


def kernel_and_args(kernel: str, length: int, tiles: tuple[int, ...]):
    """(jit function, argument types/values, constexprs) of one slkernels kernel on the benchmark shape."""
    bm, bn = tiles[0], tiles[1]
    q_strides = dict(zip(("sqb", "sqh", "sql", "sqd"), _strides(length, HQ)))
    k_strides = dict(zip(("skb", "skh", "skl", "skd"), _strides(length, HKV)))
    v_strides = dict(zip(("svb", "svh", "svl", "svd"), _strides(length, HKV)))
    name, _, arg = kernel.partition(":")
    if name == "entry":
        from slkernels.triton_ops import attend

        mode = int(arg or 1)
        nj = 3 if mode in (1, 2, 4) else 1
        desc = f"tensordesc<bf16[{bn}, {D}]>"
        args = dict(Q="*bf16", K="*bf16", V="*bf16", DO="*bf16", K_DESC=desc, V_DESC=desc, ENT_ID="*i32",
                    ENT_LO="*i32", ENT_HI="*i32", ENT_COUNT="*i32", ent_stride=length * G * nj, OW="*bf16",
                    LSEW="*fp32", SPAN_O="*bf16", OUT="*bf16", GATE="*fp32", LSE_IN="*fp32", COEF="*fp32", DELTA="*fp32",
                    OUT_E="*fp32", DQ="*fp32", DQ_OUT="*bf16", **q_strides, **k_strides, **v_strides, H_Q=HQ,
                    H_KV=HKV, L_Q=length, L_KV=length, sm_scale=D**-0.5)
        consts = dict(NJ=nj, MODE=mode, D=D, BM=bm, BN=bn, PREC="tf32", UPCAST=False, USE_DESC=True, Q_ROWS=True,
                      DQ_FINAL=mode == 3, STORE_OW=mode == 0, STORE_OUT=mode == 0, KS=3 if mode == 0 else 0,
                      OUT_AT_Q=mode == 0)
        return attend._entry_kernel, args, consts
    if name == "ws":  # the warp-specialised forward of attend_ws: ws:1 spans, ws:0 window (mixing 3 spans)
        from slkernels.triton_ops import attend_ws
        from triton.experimental.gluon import language as gl

        mode = int(arg or 1)
        nj = 1 if mode == 0 else 3
        desc = f"tensordesc<bf16[{bn}, {D}],{gl.NVMMASharedLayout.get_default_for([bn, D], gl.bfloat16)!r}>"
        if mode in (3, 4):  # the span dq: 4 fused (two accumulators), 3 with dg known (one)
            args = dict(Q="*bf16", K_DESC=desc, V_DESC=desc, DO="*bf16", ENT_ID="*i32", ENT_LO="*i32",
                        ENT_HI="*i32", ENT_COUNT="*i32", ent_stride=length * G * nj,
                        tiles_per_grp=length * G * nj // (2 * bm), n_tiles=HKV * length * G * nj // (2 * bm),
                        LSE_IN="*fp32", COEF="*fp32", DELTA="*fp32", OUT_E="*fp32", DQ="*fp32", sqb=HQ * length * D,
                        sqh=length * D, sql=D, H_Q=HQ, H_KV=HKV, L_Q=length, L_KV=length, sm_scale=D**-0.5)
            consts = dict(NJ=nj, D=D, BM=bm, BN=bn, STAGES=tiles[3], REGS=attend_ws.WS_DQ_TILES[3], Q_ROWS=True,
                          FUSED=mode == 4, num_warps=tiles[2])
            return attend_ws._ws_dq_kernel, args, consts
        args = dict(Q="*bf16", K_DESC=desc, V_DESC=desc, ENT_ID="*i32", ENT_LO="*i32", ENT_HI="*i32",
                    ENT_COUNT="*i32", ent_stride=length * G * nj, tiles_per_grp=length * G * nj // (2 * bm),
                    n_tiles=HKV * length * G * nj // (2 * bm), OW="*bf16", LSEW="*fp32", SPAN_O="*bf16", OUT="*bf16",
                    GATE="*fp32", LSE_IN="*fp32", OUT_E="*fp32", sqb=HQ * length * D, sqh=length * D, sql=D, H_Q=HQ,
                    H_KV=HKV, L_Q=length, L_KV=length, sm_scale=D**-0.5)
        consts = dict(NJ=nj, MODE=mode, D=D, BM=bm, BN=bn, STAGES=tiles[3], REGS=attend_ws.WS_TILES[3], Q_ROWS=True,
                      STORE_OW=False, STORE_OUT=mode == 0, KS=3 if mode == 0 else 0, num_warps=tiles[2])
        return attend_ws._ws_forward_kernel, args, consts
    if name == "ws_dkdv":  # the warp-specialised dk/dv of attend_bwd_ws: ws_dkdv:1 window list, ws_dkdv:3 spans
        from slkernels.triton_ops import attend_bwd_ws
        from triton.experimental.gluon import language as gl

        nj = int(arg or 3)
        desc = f"tensordesc<bf16[{bn}, {D}],{gl.NVMMASharedLayout.get_default_for([bn, D], gl.bfloat16)!r}>"
        args = dict(Q="*bf16", K_DESC=desc, V_DESC=desc, DO="*bf16", ENT_ID="*i32", ENT_LO="*i32", ENT_HI="*i32",
                    ent_stride=length * G * nj, RANGES="*i32", PERIOD="*i32", LSE_IN="*fp32", DLT="*fp32",
                    DK="*fp32", DV="*fp32", sqb=HQ * length * D, sqh=length * D, sql=D, H_Q=HQ,
                    H_KV=HKV, L_Q=length, L_KV=length, n_blocks=length // (2 * bn), n_buckets=16, sm_scale=D**-0.5)
        consts = dict(NJ=nj, D=D, BM=bm, BN=bn, STAGES=tiles[3], REGS=attend_bwd_ws.WS_DKDV_TILES[3],
                      LOADER_REGS=attend_bwd_ws.WS_DKDV_TILES[4], ACCUMULATE=True, Q_ROWS=True, ROTATE=True,
                      num_warps=tiles[2])
        return attend_bwd_ws._ws_dkdv_kernel, args, consts
    if name == "dkdv":
        from slkernels.triton_ops import attend_bwd

        nj = int(arg or 3)
        args = dict(Q="*bf16", K="*bf16", V="*bf16", DO="*bf16", ENT_ID="*i32", ENT_LO="*i32", ENT_HI="*i32",
                    ent_stride=length * G * nj, RANGES="*i32", PERIOD="*i32", LSE_IN="*fp32", COEF="*fp32",
                    DELTA="*fp32", DK="*fp32", DV="*fp32", **q_strides, **k_strides, **v_strides, H_Q=HQ, H_KV=HKV,
                    L_Q=length, L_KV=length, n_blocks=length // bn, n_buckets=16, sm_scale=D**-0.5)
        consts = dict(NJ=nj, D=D, BM=bm, BN=bn, ACCUMULATE=True, PREC="tf32", UPCAST=False, Q_ROWS=True, ROTATE=True)
        return attend_bwd._dkdv_kernel, args, consts
    if name == "search":  # search, search:span_mean or search:hi_only
        from slkernels.triton_ops import search

        args = dict(QS="*bf16", K="*bf16", PRE="*fp16", THIRD="*fp16", SCALE="*fp32", CENTER="*fp32", NORM="*fp32", BACK="*i64", FWD="*i64", OFFS="*i64",
                    POS="*i64", S0="*i64", ANCH="*i32", SCORE="*fp32",
                    **q_strides, **k_strides, n_offsets=890, first_index=66, power=0.55, H_Q=HQ, H_KV=HKV, L_Q=length, G=G, per_split=896,
                    n_splits=1, width=2032, t_cap=2 * length - 1, pre_rows=length + 1,
                    margin=search.RESCORE_MARGIN)
        mean, hi_only = arg in ("span_mean", "hi_only"), arg == "hi_only"  # hi_only: the timing loop, no rescoring
        consts = dict(D=D, GP=16, BN=bn, KSEL=3, KEEP=4 if mean and not hi_only else 3, KP=4, PREC="tf32",
                      UPCAST=False, WIDE=False, SPAN_MEAN=mean, RESCORE=mean and not hi_only, RESCORE_ALL=False,
                      DC=32, NOISE=0.0, HI_ONLY=hi_only, TRIGGER=False, REACH_BY_MASK=False)
        return search._search_kernel, args, consts
    if name == "span_lists":
        from slkernels.triton_ops import span_lists

        args = dict(ANCH="*i32", SCORE="*fp32", POS="*i64", S0="*i64", BACK="*i64", FWD="*i64", KEY="*i32",
                    HI="*i32", ENT="*i32", GATE="*fp32", VALID="*u8", L_Q=length, H_Q=HQ, H_KV=HKV, width=2032,
                    t_bound=length, n_buckets=16, shift=27, invalid=(16 << 27) - 1)
        return span_lists._span_lists_kernel, args, dict(G=G, KSEL=3, KP=4, BM=bm)
    if name in ("decode", "combine"):  # one decode row at `length` keys, released (3 spans, 16 search pieces);
        import torch
        from slkernels.triton_ops import decode  # decode:pdl / combine:pdl with programmatic dependent launch

        pdl = arg == "pdl"
        n_split_s = -(-8195 // (8 * bn))  # a span at 1M keys (8195) in chunks of about BN x 8 keys
        n_split_w = -(-2032 // decode.WINDOW_TILE[0])  # the window (2032 keys) in WINDOW_TILE's chunks
        span_base = HQ * n_split_w  # the scratch slots: every row's window chunks, then every span's
        slots = dict(n_split_w=n_split_w, n_split_s=n_split_s, span_base=span_base,
                     n_slots=-(-(span_base + HQ * 3 * n_split_s) // 16) * 16, n_pieces=48)
        lists = dict(ANCH="*i32", SCORE="*fp32", PART="*fp32")
        if name == "combine":  # a range's chunks merged at once, COMBINE_TILE's columns of D per program
            return decode._decode_combine_kernel, dict(**lists, OUT="*bf16", **slots), dict(
                D=D, DC=decode.COMBINE_TILE[0], KSEL=3, KP=4, SBW=triton.next_power_of_2(n_split_w),
                SBS=triton.next_power_of_2(n_split_s), NPP=64, GDC=pdl, ONE_W=True, ONE_S=True,
                LATE=decode.GATES_BEFORE_WAIT)
        q_strides = dict(zip(("sqb", "sqh", "sql", "sqd"), _strides(1, HQ)))
        args = dict(Q="*bf16", K="*bf16", V="*bf16", **lists, POS="*i64", S0="*i64", BACK="*i64", FWD="*i64",
                    **q_strides, **k_strides, **v_strides, **slots, H_Q=HQ, H_KV=HKV, L_Q=1, G=G, W=2032,
                    t_cap=2 * length - 1, n_window=HKV * n_split_w, chunk_w=-(-2032 // n_split_w),
                    chunk_s=-(-8195 // n_split_s), sm_scale=D**-0.5)
        _, window_block, window_stages = decode.WINDOW_TILE
        return decode._decode_partial_kernel, args, dict(
            D=D, BN=bn, STAGES=tiles[3], BNW=window_block, GP=max(16, G), WSTAGES=window_stages, KSEL=3, KP=4, NPP=64,
            UPCAST=False, PREC="tf32", GDC=pdl, ORDER=decode._chunk_order(n_split_s), GROUPS=arg != "rows",
            LATE=decode.GATES_BEFORE_WAIT,
            DOT=arg != "rows" and (arg == "dot" or decode._span_dot(D, torch.bfloat16)))
    raise SystemExit(f"error: unknown kernel {kernel!r}; use entry:MODE, dkdv:NJ, search[:span_mean|:hi_only], span_lists, "
                     "decode[:pdl|:rows|:dot] or combine[:pdl]")


def _cuobjdump(*args: str) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=True).stdout


def _listing(sass: str) -> list[tuple[int, str]]:
    listing = []
    for line in sass.splitlines():
        found = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if found:
            listing.append((int(found.group(1), 16), found.group(2).strip()))
    return listing


def _target(text: str) -> int | None:
    branch = re.search(r"BRA (0x[0-9a-f]+)", text)
    return int(branch.group(1), 16) if branch else None


def loops(sass: str, addresses: bool = False) -> list[list]:
    """The instructions of every backward-branching loop, in the order of their branches (with `addresses`, as
    (address, instruction) pairs)."""
    listing = _listing(sass)
    bodies = []
    for address, text in listing:
        target = _target(text)
        if target is not None and target < address:
            bodies.append([(a, t) if addresses else t for a, t in listing if target <= a <= address])
    return bodies


def innermost_loops(sass: str) -> list[tuple[int, bool, int]]:
    """The loops that hold no other loop's branch (each iteration's whole cost): (instructions, whether it issues
    tensor-core products, instructions behind its forward branches, which an iteration may skip)."""
    bodies = loops(sass, addresses=True)
    out = []
    for body in bodies:
        if any(other is not body and len(other) < len(body) and other[-1] in body for other in bodies):
            continue
        skips = [(a, _target(t)) for a, t in body if _target(t) is not None and _target(t) > a]
        behind = sum(1 for a, _ in body if any(lo < a < hi for lo, hi in skips))
        out.append((len(body), any(opcode(t) in TENSOR_CORE_OPS for _, t in body), behind))
    return out


def innermost_product_loop(sass: str) -> list[str]:
    """Instructions of the smallest backward-branching loop that issues tensor-core products ([] if none)."""
    best: list[str] = []
    for body in loops(sass):
        if any(opcode(t) in TENSOR_CORE_OPS for t in body) and (not best or len(body) < len(best)):
            best = body
    return best


def opcode(instruction: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", instruction).split()[0].split(".")[0]


def product_order(loop: list[str]) -> list[str]:
    """The loop's tensor-core products, waits for them and exponentials in issue order, runs merged: e.g. ["HGMMA",
    "DEPBAR", "MUFU", "HGMMA", "DEPBAR"] for a loop that waits for its scores before their softmax."""
    order: list[str] = []
    for text in loop:
        op = opcode(text)
        kind = "DEPBAR" if op == "WARPGROUP" and "DEPBAR" in text else op if op in ("HGMMA", "MUFU") else None
        if kind and (not order or order[-1] != kind):
            order.append(kind)
    return order


def report(kernel: str, length: int, tiles: tuple[int, ...], keep: str | None) -> dict:
    fn, args, consts = kernel_and_args(kernel, length, tiles)
    compiled = compile_for_sm90(fn, args, consts, tiles[2], tiles[3], tiles[4] if len(tiles) > 4 else None)
    folder = keep or tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, kernel.replace(":", "_"))
    with open(stem + ".cubin", "wb") as f:
        f.write(compiled.asm["cubin"])
    usage = _cuobjdump("--dump-resource-usage", stem + ".cubin")
    sass = _cuobjdump("-sass", stem + ".cubin")
    if keep:
        for ext, text in ((".sass", sass), (".ptx", compiled.asm["ptx"]), (".ttgir", compiled.asm["ttgir"])):
            with open(stem + ext, "w") as f:
                f.write(text)
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    loop = innermost_product_loop(sass)
    return dict(kernel=kernel, triton=triton.__version__, tiles=tiles, registers=int(regs.group(1)) if regs else None,
                stack_bytes=int(stack.group(1)) if stack else None, shared_bytes=compiled.metadata.shared,
                loop_instructions=len(loop), loop_mix=collections.Counter(opcode(t) for t in loop).most_common(12),
                loop_order=product_order(loop), innermost_loops=innermost_loops(sass),
                # device-wide fences: what acquire-release atomics cost (one per element added)
                gpu_fences=len(re.findall(r"MEMBAR\.\w+\.GPU", sass)),
                # programmatic dependent launch: waits for the kernel before, and the go-ahead to the one after
                grid_dependency=collections.Counter(re.findall(r"griddepcontrol\.(\w+)", compiled.asm["ptx"])),
                # global loads issued before the first wait for the kernel before (those that need nothing from it)
                loads_before_wait=len(re.findall(r"ld\.global", compiled.asm["ptx"].split("griddepcontrol.wait")[0]))
                if "griddepcontrol.wait" in compiled.asm["ptx"] else None,
                # copies to shared memory that a pipelined loop issues ahead of their use (none: no loop is pipelined)
                async_copies=len(re.findall(r"cp\.async\.c[ag]\.shared", compiled.asm["ptx"])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernel")
    ap.add_argument("--tiles", default="64,64,4,3", help="BM,BN,WARPS,STAGES[,REGCAP]")
    ap.add_argument("--length", type=int, default=262144)
    ap.add_argument("--keep", default=None)
    args = ap.parse_args(argv)
    tiles = tuple(int(x) for x in args.tiles.split(","))
    if len(tiles) not in (4, 5):
        raise SystemExit("error: --tiles takes BM,BN,WARPS,STAGES or BM,BN,WARPS,STAGES,REGCAP")
    r = report(args.kernel, args.length, tiles, args.keep)
    print(f"{r['kernel']} (Triton {r['triton']}, sm_90, tiles {r['tiles']}): {r['registers']} registers, "
          f"{r['stack_bytes']} B spilled stack, {r['shared_bytes']} B shared memory")
    if r["loop_instructions"]:
        print(f"  innermost product loop: {r['loop_instructions']} instructions per iteration")
        print("  " + ", ".join(f"{op} {n}" for op, n in r["loop_mix"]))
        print("  products, waits and exponentials in issue order: " + " -> ".join(r["loop_order"]))
    else:
        print("  no loop issuing tensor-core products")
    loop_text = []
    for n, tc, behind in r["innermost_loops"]:
        notes = (["tensor cores"] if tc else []) + ([f"{behind} of them behind a branch"] if behind else [])
        loop_text.append(f"{n}" + (f" ({'; '.join(notes)})" if notes else ""))
    print("  innermost loops, instructions per iteration: " + (", ".join(loop_text) or "none"))
    print(f"  device-wide memory fences: {r['gpu_fences']}")
    if r["grid_dependency"]:
        print("  programmatic dependent launch: " + ", ".join(f"{op} {n}" for op, n in r["grid_dependency"].items()))
        print(f"  global loads before the first wait: {r['loads_before_wait']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
