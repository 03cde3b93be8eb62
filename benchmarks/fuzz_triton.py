"""Randomised differential check of the Triton backend against the reference, row by row (a CUDA GPU, or tiny
shapes under the Triton interpreter).

The GPU tests hold the kernels to the reference on three fixed settings, by one relative error over a whole
output: at 1000 rows x 16 heads a single wrong (row, head) moves that error by about 1/sqrt(16000), well inside
bf16's tolerance. This draws the setting (every field of `SuperlinearConfig`, both search keys), the shapes (GQA
ratios up to 16:1, odd lengths), the left padding, the query positions and the kind of call at random, and compares
every sampled (batch, head, row) on its own:

- prefill: the whole sequence, the reference on sampled rows;
- chunk: a block of rows at arbitrary positions of a longer cache (chunked prefill, a static cache);
- decode: 1 to 16 rows (the decode path), then the same shapes again with other positions, padding and cache
  contents, which `superlinear_attention` may replay from a CUDA graph;
- grad: forward and backward, the output and the four gradients row by row (key rows for dk and dv).

A row over its bound is looked at again. Where the reference's k-th and (k+1)-th router scores of that (row, head)
lie within rounding of each other, both sides may pick other spans and both be right: such a row is counted as a
tie. Any other row over its bound is a failure, logged with the case's seed (``--case SEED`` draws it again).

    python benchmarks/fuzz_triton.py --minutes 8 --seed 0 --out DIR     # cases until the time is up; JSON in DIR
    python benchmarks/fuzz_triton.py --narrow ...     # bf16, D = 128, k in {1, 3}: fewer compilations, more cases
    python benchmarks/fuzz_triton.py --case SEED [--narrow]                # one case again
    python benchmarks/fuzz_triton.py --kinds decode --set "SPAN_DOT=True" ...  # decode cases with a decode setting
    TRITON_INTERPRET=1 python benchmarks/fuzz_triton.py ...                # tiny cases on the CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import settings  # this folder is on sys.path when the script runs
import torch
from slkernels import SuperlinearConfig, superlinear_attention
from slkernels.inputs import first_real_token
from slkernels.selection import candidates, key_prefix_sums
from slkernels.triton_ops import decode

# Per-row bound on ||out - ref|| / (||ref|| + floor), by input dtype (the reference runs on upcast inputs).
ROW_BOUND = {torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float32: 2e-3}
# Per-row bound on a gradient's ||mine - ref|| over its rms row norm (`row_errors`).
# A wrong row is off by about its own norm; bf16 noise in a saturated softmax row reaches 0.03-0.09 of the rms row
# norm at D = 16 with sharp queries under the interpreter (about twice torch's CPU SDPA on the same dense rows).
GRAD_BOUND = {torch.bfloat16: 0.15, torch.float16: 3e-2, torch.float32: 3e-3}
# Gradients are judged where at least this many rows are not zero: in a case of a few tokens most rows are padding or
# first tokens, and the one or two left may be saturated (a 2-key row at p = 0.99 has a dq that a bf16 output alone
# moves by 10%).
MIN_GRAD_ROWS = 16
# A (row, head) whose reference scores at ranks k and k + 1 differ by less than this (relative to the larger) is a
# tie: the kernels' float32 sums may order them the other way.
TIE = 1e-4
KINDS = ("prefill", "chunk", "decode", "grad")
KEY_OFFSET = 1.5  # a common part of every key in span-mean cases, as a trained layer's keys have


@dataclass
class Case:
    seed: int
    kind: str
    config: dict
    dtype: str
    batch: int
    heads: tuple
    dim: int
    len_kv: int
    positions: list
    first_real: list
    sharp: float
    results: dict = field(default_factory=dict)


def draw_config(rng: random.Random) -> SuperlinearConfig:
    power = lambda: rng.choice([0.5, 0.55, 1 / 3, round(rng.uniform(0.25, 0.9), 3)])  # noqa: E731
    return SuperlinearConfig(
        sw_index=rng.choice([0, 1, 2, 3, 5, 7, 15, 31, 65, rng.randrange(0, 80)]),
        num_spans=rng.randint(1, 5),
        search_power=power(),
        span_power=power(),
        backward_factor=rng.choice([0.0, 0.5, 1.0, 2.0, 3.0, round(rng.uniform(0, 4), 2)]),
        forward_factor=rng.choice([0.0, 0.5, 1.0, 2.0, round(rng.uniform(0, 2), 2)]),
        search_key=rng.choice(["anchor", "span_mean"]),
    )


def draw_case(seed: int, small: bool, narrow: bool = False, kinds: tuple[str, ...] = KINDS) -> Case:
    """One case of `seed`; `small`: tiny shapes for the interpreter; `narrow`: the compile-time arguments of the
    kernels from a short list (bf16, D = 128, k in {1, 3}, four head layouts), so that a GPU run spends its time on
    cases rather than on compiling each draw's kernels; `kinds`: the kinds of call drawn from (a seed draws the same
    case again only with the same kinds)."""
    rng = random.Random(seed)
    kind = rng.choice(kinds)
    cfg = draw_config(rng)
    if narrow:
        cfg = SuperlinearConfig.from_dict({**cfg.to_dict(), "num_spans": rng.choice([1, 3])})
    dtype = rng.choice(["bfloat16", "bfloat16", "float16"] + ([] if small else ["float32"]))
    heads = rng.choice([(4, 1), (2, 2), (2, 1), (1, 1)] if small else
                       [(32, 2), (16, 1), (8, 2), (4, 4), (12, 3), (6, 2), (2, 1), (1, 1)])
    dim = 16 if small else rng.choice([64, 128, 128, 256] if kind != "grad" else [64, 128])
    if narrow:
        dtype, dim, heads = "bfloat16", 128, rng.choice([(32, 2), (16, 1), (8, 8), (4, 1)])
    batch = rng.randint(1, 2 if small else 3)
    top = 72 if small else {"prefill": 40000, "chunk": 70000, "decode": 140000, "grad": 6000}[kind]
    if cfg.search_key == "span_mean":  # the reference gathers [rows, candidates, D] float64 span means
        top = top // 4
    len_kv = max(1, int(math.exp(rng.uniform(0, math.log(top)))))
    if kind in ("prefill", "grad"):
        positions = list(range(len_kv))
    elif kind == "chunk":
        n = rng.randint(min(17, len_kv), min(len_kv, 2048))
        start = rng.randint(0, len_kv - n)
        positions = list(range(start, start + n))
    else:
        n = rng.randint(1, min(16, len_kv))
        if rng.random() < 0.5:  # the last rows of a cache filled up to some point
            end = rng.randint(n, len_kv)
            positions = list(range(end - n, end))
        else:
            positions = sorted(rng.sample(range(len_kv), n))
    first_real = [0 if rng.random() < 0.6 else rng.randint(0, len_kv) for _ in range(batch)]
    # sharp queries (saturated softmaxes) in forward cases only: a saturated row's gradient is a small difference of
    # large terms, within bf16 noise of zero (`row_errors`)
    sharp = 1.0 if kind == "grad" else rng.choice([1.0, 1.0, 4.0])
    return Case(seed, kind, cfg.to_dict(), dtype, batch, heads, dim, len_kv, positions, first_real, sharp)


def make_inputs(case: Case, device: str, grad: bool = False):
    g = torch.Generator(device=device).manual_seed(case.seed)
    dtype = getattr(torch, case.dtype)
    hq, hkv = case.heads
    lq = len(case.positions)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, device=device, generator=g) * scale + shift).to(dtype).requires_grad_(grad)

    shift = KEY_OFFSET if case.config["search_key"] == "span_mean" else 0.0
    q = rnd(case.batch, hq, lq, case.dim, scale=case.sharp)
    k = rnd(case.batch, hkv, case.len_kv, case.dim, shift=shift)
    v = rnd(case.batch, hkv, case.len_kv, case.dim)
    qs = rnd(case.batch, hq, lq, case.dim, scale=case.sharp)
    mask = torch.ones(case.batch, case.len_kv, dtype=torch.long, device=device)
    for b, s0 in enumerate(case.first_real):
        mask[b, :s0] = 0
    pos = torch.tensor(case.positions, dtype=torch.long, device=device)
    return q, k, v, qs, mask, pos


def reference(q, k, v, qs, cfg, mask, pos, rows=None):
    """The reference on upcast inputs (float64 for the span-mean key, as the GPU tests), optionally on some rows."""
    compute = torch.float64 if cfg.search_key == "span_mean" else torch.float32
    up = [x.detach().to(compute).requires_grad_(x.requires_grad) for x in (q, k, v, qs)]
    qr, qsr, pr = up[0], up[3], pos
    if rows is not None:
        qr, qsr, pr = up[0][:, :, rows], up[3][:, :, rows], pos[rows]
    out = superlinear_attention(qr, up[1], up[2], qsr, cfg, cache_position=pr, attention_mask=mask,
                                backend="reference")
    return up, out


def row_errors(mine: torch.Tensor, ref: torch.Tensor, own_norm: bool = True) -> torch.Tensor:
    """Per row of the last dim (leading dims kept), inf where `mine` holds a non-finite value: ||mine - ref|| over
    ||ref|| + 1e-3 rms (outputs, `own_norm`), or over the rms row norm alone (gradients: in a sharp softmax a row's
    gradient is a small difference of large terms, and the bf16 output that FlashAttention-style backwards take
    their row sums from leaves an error of about 2^-9 |dO| |O| on it whatever the row's own norm). The rms is over
    the rows that are not zero."""
    mine, ref = mine.detach(), ref.detach()
    diff = (mine.double() - ref.double()).norm(dim=-1)
    norm = ref.double().norm(dim=-1)
    live = norm[norm > 0]  # rows of padding, and a first token's dq, are zero: the rms is over the others
    rms = (live.pow(2).mean().sqrt() if live.numel() else norm.new_zeros(())).clamp_min(1e-4)
    err = diff / (norm + 1e-3 * rms) if own_norm else diff / rms
    return torch.where(torch.isfinite(mine.double()).all(dim=-1), err, torch.full_like(err, float("inf")))


def tie_margin(cfg, q_search, k, mask, pos, b: int, h: int, row: int) -> float:
    """Relative gap between the reference's k-th and (k+1)-th router scores of (b, h, row), float64 (inf where the
    row has at most k candidates: nothing to tie with)."""
    hkv = k.shape[1]
    group = q_search.shape[1] // hkv
    s0 = first_real_token(mask)
    sb = q_search[b:b + 1, h:h + 1, row:row + 1].double()[:, None]  # [1, 1, 1, 1, D]
    kc = k[b:b + 1, h // group:h // group + 1].double()
    p = pos[row:row + 1]
    s0b = s0[b:b + 1, None]
    t = p[None, :] + 1 - s0b
    prefix = key_prefix_sums(kc) if cfg.search_key == "span_mean" else None
    cand = candidates(cfg, sb, kc, p, t, s0b, prefix)
    scores = cand.scores[0, 0, 0, 0][cand.valid[0, 0]]
    if scores.numel() <= cfg.num_spans:
        return float("inf")
    top = scores.sort(descending=True).values
    a, c = top[cfg.num_spans - 1].item(), top[cfg.num_spans].item()
    return abs(a - c) / max(abs(a), abs(c), 1e-30)


def judge(name, errs, bound, case, cfg, qs, k, mask, pos, rows, ties_ok=True):
    """Rows over the bound, split into ties and failures; errs [B, H, R] for output-like tensors."""
    over = (errs > bound).nonzero().tolist()
    ties, fails = 0, []
    for idx in over[:64]:
        b, h, r = idx
        margin = tie_margin(cfg, qs, k, mask, pos, b, h, rows[r]) if ties_ok and qs is not None else float("inf")
        if margin < TIE:
            ties += 1
        else:
            fails.append({"b": b, "h": h, "row": int(pos[rows[r]]), "err": float(errs[b, h, r]), "margin": margin})
    worst = float(errs[torch.isfinite(errs)].max()) if torch.isfinite(errs).any() else float("inf")
    if not torch.isfinite(errs).all():
        worst = float("inf")
    case.results[name] = {"rows": int(errs.numel()), "worst": worst, "over": len(over), "ties": ties,
                          "fails": fails + ([{"more": len(over) - 64}] if len(over) > 64 else [])}
    return not fails and len(over) <= 64


def sample_rows(n: int, rng: random.Random, count: int = 160) -> list:
    if n <= count:
        return list(range(n))
    tail = list(range(n - 32, n))
    return sorted(set(rng.sample(range(n - 32), count - 32)) | set(tail))


def run_case(case: Case, device: str) -> bool:
    cfg = SuperlinearConfig.from_dict(case.config)
    dtype = getattr(torch, case.dtype)
    bound = ROW_BOUND[dtype]
    rng = random.Random(case.seed + 1)
    ok = True
    if case.kind == "grad":
        q, k, v, qs, mask, pos = make_inputs(case, device, grad=True)
        out = superlinear_attention(q, k, v, qs, cfg, cache_position=pos, attention_mask=mask, backend="triton")
        gout = torch.randn(out.shape, device=device, generator=torch.Generator(device=device).manual_seed(case.seed),
                           dtype=torch.float32).to(dtype)
        out.backward(gout)
        up, ref = reference(q, k, v, qs, cfg, mask, pos)
        ref.backward(gout.to(ref.dtype))
        rows = list(range(len(case.positions)))
        ok &= judge("out", row_errors(out, ref), bound, case, cfg, qs, k, mask, pos, rows)
        # gradients: a tie moves them too, so their rows are judged against the output's ties only loosely
        for name, mine, theirs in zip(("dq", "dk", "dv", "dq_search"), (q, k, v, qs), up):
            grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in (mine, theirs)]  # None: zero
            if (grads[1].norm(dim=-1) > 0).sum() < MIN_GRAD_ROWS:
                continue
            errs = row_errors(*grads, own_norm=False)
            ok &= judge(name, errs, GRAD_BOUND[dtype], case, cfg, None, k, mask, pos, list(range(errs.shape[2])),
                        ties_ok=False) or case.results["out"]["ties"] > 0
        return ok
    q, k, v, qs, mask, pos = make_inputs(case, device)
    with torch.no_grad():
        out = superlinear_attention(q, k, v, qs, cfg, cache_position=pos, attention_mask=mask, backend="triton")
        rows = sample_rows(len(case.positions), rng)
        _, ref = reference(q, k, v, qs, cfg, mask, pos, rows)
        ok &= judge("out", row_errors(out[:, :, rows], ref), bound, case, cfg, qs, k, mask, pos, rows)
        if case.kind == "decode":  # the same shapes again: other positions, padding and cache contents (a replay)
            n = len(case.positions)
            again = Case(case.seed + 7919, "decode", case.config, case.dtype, case.batch, case.heads, case.dim,
                         case.len_kv, sorted(rng.sample(range(case.len_kv), n)),
                         [rng.choice([0, rng.randint(0, case.len_kv)]) for _ in range(case.batch)], case.sharp)
            for dst, src in zip((q, k, v, qs, mask, pos), make_inputs(again, device)):
                dst.copy_(src)
            for _ in range(2):  # the second call of a key replays its graph where the backend allows it
                out = superlinear_attention(q, k, v, qs, cfg, cache_position=pos, attention_mask=mask,
                                            backend="triton")
            rows = list(range(n))
            _, ref = reference(q, k, v, qs, cfg, mask, pos, rows)
            ok &= judge("replay", row_errors(out, ref), bound, case, cfg, qs, k, mask, pos, rows)
            case.results["replay"].update(positions=again.positions, first_real=again.first_real)
    return ok


def compact(record: dict) -> dict:
    """A case's record with its positions as [first, last + 1] where they are consecutive (a prefill's are the
    whole sequence); `--case SEED` draws them again either way."""
    pos = record["positions"]
    if len(pos) > 2 and pos == list(range(pos[0], pos[-1] + 1)):
        record["positions"] = {"range": [pos[0], pos[-1] + 1]}
    return record


def card(device: str) -> str:
    import triton

    if device == "cpu":
        return f"CPU, Triton interpreter {triton.__version__}, torch {torch.__version__}"
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name} ({p.total_memory // 2**20} MiB), torch {torch.__version__}, Triton {triton.__version__}, "
            f"CUDA {torch.version.cuda}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0, help="first case's seed; case i uses seed + i")
    ap.add_argument("--case", type=int, default=None, help="run only the case of this seed, verbosely")
    ap.add_argument("--out", default=None, help="folder for fuzz.json")
    ap.add_argument("--narrow", action="store_true", help="few compile-time variants (`draw_case`): more cases a minute")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"kinds of call to draw from, of {','.join(KINDS)}")
    ap.add_argument("--set", action="append", default=[], metavar='"NAME=VALUE; ..."',
                    help="a setting of the decode path for every case, e.g. SPAN_DOT=True (benchmarks/settings.py)")
    args = ap.parse_args()
    kinds = tuple(args.kinds.split(","))
    if not kinds or not set(kinds) <= set(KINDS):
        sys.exit(f"error: --kinds {args.kinds}: the kinds are {','.join(KINDS)}")
    overrides = [pair for item in args.set for pair in settings.parse(decode, item)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("no CUDA device: set TRITON_INTERPRET=1 to run tiny cases under the Triton interpreter")
    print(card(device), flush=True)
    seeds = [args.case] if args.case is not None else None
    t_end = time.time() + 60 * args.minutes
    done, failed, counts = [], [], {}
    i = 0
    while (seeds is None and time.time() < t_end) or (seeds is not None and i < len(seeds)):
        seed = seeds[i] if seeds is not None else args.seed + i
        i += 1
        case = draw_case(seed, device == "cpu", args.narrow, kinds)
        start = time.time()
        try:
            with settings.overridden(decode, overrides):
                ok = run_case(case, device)
        except torch.OutOfMemoryError:  # the reference's intermediates, not a finding
            case.results["skipped"] = "out of memory"
            ok = True
            torch.cuda.empty_cache()
        except Exception as exc:  # a crash is a finding too
            case.results["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ok = False
        if device == "cuda":
            torch.cuda.synchronize()
        counts[case.kind] = counts.get(case.kind, 0) + 1
        summary = " ".join(f"{k}={v['worst']:.1e}" + (f"(ties {v['ties']})" if v.get("ties") else "")
                           for k, v in case.results.items() if isinstance(v, dict))
        cfg = case.config
        print(f"{'ok  ' if ok else 'FAIL'} seed={seed} {case.kind} {case.dtype} B={case.batch} H={case.heads} "
              f"D={case.dim} L={case.len_kv} rows={len(case.positions)} s0={case.first_real} "
              f"sw={cfg['sw_index']} k={cfg['num_spans']} p={cfg['search_power']} rho={cfg['span_power']} "
              f"bb={cfg['backward_factor']} bf={cfg['forward_factor']} key={cfg['search_key']} "
              f"{summary} {case.results.get('error', '')} ({time.time() - start:.1f} s)", flush=True)
        record = compact(asdict(case))
        record["ok"] = ok
        done.append(record)
        if not ok:
            failed.append(record)
    print(f"{len(done)} cases ({counts}), {len(failed)} failed", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fuzz.json"), "w") as f:
            json.dump({"card": card(device), "narrow": args.narrow, "kinds": kinds, "set": args.set, "tie": TIE,
                       "row_bound": {str(k): v for k, v in ROW_BOUND.items()},
                       "grad_bound": {str(k): v for k, v in GRAD_BOUND.items()}, "cases": done}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
