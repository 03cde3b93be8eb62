"""Where the cover layout's decode step leaves the reference on a GPU: released and the small test config, B = 1,
32 / 2 heads, the last position; the 2-D pieces merge (`_tops_of_pieces` over a KV head's 16 rows, reshaped as the
cover kernel does) against torch's stable sort, and the step's error per query head against the reference under
several settings (pipeline stages, block, programmatic dependent launch). It runs on a tree with `cover.patch`
applied (`decode_rows`, `DECODE_COVER`, `COVER_TILE`); call 3 ran it on that patch's first form."""

import json

import torch
import triton
import triton.language as tl
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.triton_ops import decode
from slkernels.triton_ops.decode_rows import _tops_of_pieces


@triton.jit
def _tops(ANCH, SCORE, OUT, n_pieces, GP: tl.constexpr, KSEL: tl.constexpr, KP: tl.constexpr, NPP: tl.constexpr):
    kv = tl.program_id(0)
    rows = (kv * GP + tl.arange(0, GP)).to(tl.int64)
    top_a, _ = _tops_of_pieces(ANCH, SCORE, rows, n_pieces, GP, KSEL, KP, NPP)
    a = tl.reshape(top_a, [GP * KP])
    tl.store(OUT + kv * GP * KP + tl.arange(0, GP * KP), a)


SMALL = SuperlinearConfig(sw_index=7, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                          forward_factor=1.0)
for name, cfg, length in (("released", SuperlinearConfig.released(), 16384), ("released", SuperlinearConfig.released(), 5000),
                          ("small", SMALL, 3001), ("released", SuperlinearConfig.released(), 32768)):
    torch.manual_seed(0)
    q, qs = (torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    pos = torch.tensor([length - 1], device="cuda")
    s0 = torch.zeros(1, dtype=torch.int64, device="cuda")
    anchors, scores = decode.search_pieces(qs, k, cfg, pos, s0, length)
    n = anchors.shape[-1]
    flat_a, flat_s = anchors.reshape(32, n).contiguous(), scores.reshape(32, n).contiguous()
    order = torch.sort(flat_s.masked_fill(flat_a < 0, float("-inf")), dim=-1, descending=True, stable=True).indices
    want = flat_a.gather(-1, order[:, :3])
    got = torch.full((2, 16 * 4), -7, dtype=torch.int32, device="cuda")
    for warps in (1, 4):
        _tops[(2,)](flat_a, flat_s, got, n, GP=16, KSEL=3, KP=4, NPP=triton.next_power_of_2(n), num_warps=warps)
        got3 = got.reshape(32, 4)[:, :3]
        print(json.dumps({"cfg": name, "length": length, "n_pieces": n, "warps": warps,
                          "merge_equal": bool(torch.equal(got3, want)),
                          "rows_wrong": int((got3 != want).any(-1).sum())}), flush=True)
    ref = superlinear_attention(q.float(), k.float(), v.float(), qs.float(), cfg, backend="reference")
    for label, sets in (("noncover", {"DECODE_COVER": False}), ("cover", {"DECODE_COVER": True}),
                        ("cover stages 1", {"DECODE_COVER": True, "COVER_TILE": (64, 4, 1, 2)}),
                        ("cover block 32", {"DECODE_COVER": True, "COVER_TILE": (32, 4, 2, 2)}),
                        ("cover no pdl", {"DECODE_COVER": True, "DECODE_PDL": False}),
                        ("cover 1 per SM", {"DECODE_COVER": True, "COVER_TILE": (64, 4, 2, 1)})):
        saved = {key: getattr(decode, key) for key in sets}
        for key, value in sets.items():
            setattr(decode, key, value)
        out = decode.superlinear_decode(q, k, v, qs, cfg, pos, s0, 128**-0.5).float()
        for key, value in saved.items():
            setattr(decode, key, value)
        err = ((out - ref).norm(dim=-1) / ref.norm(dim=-1))[0, :, 0]
        print(json.dumps({"cfg": name, "length": length, "label": label, "rel": float((out - ref).norm() / ref.norm()),
                          "heads_over_1e-2": [i for i, e in enumerate(err.tolist()) if e > 1e-2],
                          "worst": round(float(err.max()), 4)}), flush=True)
