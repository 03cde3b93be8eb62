"""Each stage of `key_prefix` on this card against torch at 64K and 1M keys (B=1, 2 KV heads, D=128, bf16 keys with
a common mean four times their spread, 1000 padding keys): block totals, float64 offsets, centre, the bounds that
pick the float16 scale, and the span means of the stored sums against float64 (as `test_span_mean_sums_at_a_million_
tokens`), then the span means again with the bounds taken by torch and with narrower block-totals programs.
Prints JSON lines. DEVICE=cpu LENGTHS=3000 with TRITON_INTERPRET=1 runs it on the CPU (the interpreter's tiling)."""
import json
import os

import torch
from slkernels.triton_ops import prefix as P


def span_error(pre, k, pad):
    length = k.shape[2]
    real = k.double()
    real[:, :, :pad] = 0
    exact = torch.nn.functional.pad(real.cumsum(2), (0, 0, 1, 0))
    sums, center = pre.sums(), pre.center.double()
    worst = 0.0
    for n in [n for n in (1, 2, 10, 100, 2000, 8000) if n + pad <= length]:
        for end in (length, length - 12345, length // 2 + 7, pad + n):
            if end - n < pad or end > length:  # spans of real keys only
                continue
            want = (exact[0, :, end] - exact[0, :, end - n]) / n
            got = (sums[0, :, end] - sums[0, :, end - n]) / n + center[0]
            worst = max(worst, float(((got - want).norm(dim=-1) / want.norm(dim=-1)).max()))
    return worst


def torch_bounds(offsets, abs_sums, centers, first_real, heads, length, tiling):
    n_blocks = offsets.shape[1]
    first_g = first_real.repeat_interleave(heads)
    starts = torch.arange(n_blocks, device=offsets.device) * tiling.block
    ends = (starts + tiling.block).clamp_max(length)
    before = (starts.clamp_max(length)[None, :] - first_g[:, None]).clamp_min(0).double()
    real = (ends[None, :] - torch.maximum(starts[None, :], first_g[:, None])).clamp_min(0).double()
    out = []
    for c in centers.double():
        term = (offsets - before[..., None] * c[:, None, :]).abs() + abs_sums.double() + real[..., None] * c.abs()[:, None, :]
        out.append(term.amax(dim=(1, 2)).float())
    return torch.stack(out)


DEVICE = os.environ.get("DEVICE", "cuda")
for length in [int(x) for x in os.environ.get("LENGTHS", "65536,1048576").split(",")]:
    pad = min(1000, length // 8)
    k = (torch.randn(1, 2, length, 128, device=DEVICE) + 4.0).bfloat16()
    first = torch.tensor([pad], device=DEVICE)
    tiling = P._tiling(128, None)
    sums, abs_sums, _ = P._block_totals(k, first, tiling, absolute=True, weighted=False)
    real = k.float().clone()
    real[:, :, :pad] = 0
    nb = sums.shape[1]
    ref = torch.nn.functional.pad(real, (0, 0, 0, nb * tiling.block - length)).view(2, nb, tiling.block, 128)
    row = {"length": length, "sums_err": float((sums - ref.double().sum(2).float()).abs().max()),
           "abs_err": float((abs_sums - ref.abs().double().sum(2).float()).abs().max())}
    offsets = P._offsets(sums)
    first_g = P._first_per_group(first, 1, 2, k.device)
    center = P._center(sums, first_g, length)
    row["center"] = center[:, :3].tolist()
    got = P._bounds(offsets, abs_sums, center[None], first, 2, length, tiling)
    want = torch_bounds(offsets, abs_sums, center[None], first, 2, length, tiling)
    row["bound_kernel"], row["bound_torch"] = got.tolist(), want.tolist()
    row["scale"] = P._scale_for(got[0]).tolist()
    row["span_error"] = span_error(P.key_prefix(k, first), k, pad)
    saved = P._bounds
    P._bounds = torch_bounds
    row["span_error_torch_bounds"] = span_error(P.key_prefix(k, first), k, pad)
    P._bounds = saved
    saved = P.TOTALS_COLUMNS
    P.TOTALS_COLUMNS = 32
    row["span_error_totals_32_columns"] = span_error(P.key_prefix(k, first), k, pad)
    P.TOTALS_COLUMNS = saved
    pre = P.key_prefix(k, first)
    row["pairs_finite"] = bool(torch.isfinite(pre.pairs.float()).all())
    row["max_abs_scaled"] = float(pre.pairs.float().abs().max())
    print(json.dumps(row), flush=True)
