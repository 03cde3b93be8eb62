"""The backward's three ways to the span part dOut . o_s, on a GPU, one layer (B=1, 32/2 heads, D=128, bf16):

- kept: the forward's span outputs kept (`function.SAVE_SPAN_OUTPUTS`), dOut . o_s read from them, the span dq
  with one accumulator (MODE_DQ), on the warp-specialised kernel ("ws") or the `tl` one;
- fused: nothing kept, the span dq sums dOut . o_s in its walk with a second accumulator (MODE_DQ_SPAN).

For each setting and length: every way's gradients against the fused `tl` backward (largest difference relative
to the largest element), the whole backward's median time per way (and per tiling of the ws MODE_DQ kernel), and
peak memory of one forward + backward through `superlinear_attention` with and without kept outputs. One JSON line
per measurement.

    python span_dq_ways.py SETTING:LENGTH ... [--tiles BM,BN,STAGES,REGS,PERSISTENT ...]
"""
import json
import sys

import torch

sys.path.insert(0, "benchmarks")
from profile_passes import inputs  # noqa: E402
from slkernels import SuperlinearConfig, superlinear_attention  # noqa: E402
from slkernels.triton_ops import attend_ws  # noqa: E402
from slkernels.triton_ops import function as fn  # noqa: E402
from ws_forward import timed  # noqa: E402

args = sys.argv[1:]
tilings = [attend_ws.WS_DQ1_TILES]
if "--tiles" in args:
    i = args.index("--tiles")
    tilings = [tuple(int(x) for x in t.split(",")) for t in args[i + 1:]]
    args = args[:i]
scale = 128 ** -0.5


def one(setting: str, length: int, tilings: list) -> None:
    cfg = getattr(SuperlinearConfig, setting)()
    torch.manual_seed(0)
    q, k, v, qs, pos, s0 = inputs(length)
    grad = torch.randn_like(q)
    _, saved = fn.forward_pass(q, k, v, qs, cfg, pos, s0, scale, length)
    assert saved["span_o"] is not None
    bare = dict(saved, span_o=None)

    def backward(way, min_keys, tiles=None):
        fn.WS_SPAN_DQ_MIN_KEYS = fn.WS_SPAN_DQ1_MIN_KEYS = min_keys  # call 1 ran before the second constant
        if tiles is not None:
            attend_ws.WS_DQ1_TILES = tiles
        return fn.backward_pass(grad, q, k, v, qs, saved if way == "kept" else bare, scale)

    ref = backward("fused", 0)
    ways = [("fused", "tl", 0, None), ("fused", "ws", 1, None), ("kept", "tl", 0, None)]
    ways += [("kept", "ws", 1, t) for t in tilings]
    for way, kernel, min_keys, tiles in ways:
        got = backward(way, min_keys, tiles)
        torch.cuda.synchronize()
        diff = {name: float((a.float() - b.float()).abs().max() / b.float().abs().max())
                for name, a, b in zip(("dq", "dk", "dv", "dq_search"), got, ref)}
        del got
        ms = timed(f"{setting} {length} backward {way} {kernel} {tiles or ''}",
                   lambda w=way, m=min_keys, t=tiles: backward(w, m, t), reps=5 if length < 200000 else 3)
        print(json.dumps(dict(setting=setting, length=length, way=way, span_dq=kernel, tiles=tiles, backward_ms=ms,
                              rel_diff_vs_fused_tl=diff)), flush=True)
    fn.WS_SPAN_DQ_MIN_KEYS, fn.WS_SPAN_DQ1_MIN_KEYS = 3072, 1024
    attend_ws.WS_DQ1_TILES = tilings[0]
    saved = bare = ref = None  # free before the memory rows
    for keep in (True, False):
        fn.SAVE_SPAN_OUTPUTS = keep
        leaves = [x.detach().requires_grad_() for x in (q, k, v, qs)]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        superlinear_attention(*leaves, cfg, backend="triton").backward(grad)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        print(json.dumps(dict(setting=setting, length=length, keep_span_outputs=keep, fwd_bwd_peak_gib=peak)),
              flush=True)
        del leaves
    fn.SAVE_SPAN_OUTPUTS = True


for case in args:
    name, size = case.split(":")
    one(name, int(size), tilings)
