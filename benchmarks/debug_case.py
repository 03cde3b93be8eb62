"""Run one forward/backward case on the GPU and report the error against the reference (debug aid).

    python benchmarks/debug_case.py B HQ HKV L D PAD [grad|poison]...
"""

import sys

import torch
from slkernels import SuperlinearConfig, superlinear_attention


def main() -> None:
    b, hq, hkv, length, dim, pad = (int(x) for x in sys.argv[1:7])
    grad = "grad" in sys.argv[7:]
    cfg = SuperlinearConfig(sw_index=7, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0)
    def rnd(*s):
        return torch.randn(*s, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    q, k, v, qs = rnd(b, hq, length, dim), rnd(b, hkv, length, dim), rnd(b, hkv, length, dim), rnd(b, hq, length, dim)
    mask = torch.ones(b, length, dtype=torch.long, device="cuda")
    mask[-1, :pad] = 0
    if "poison" in sys.argv[7:]:
        blob = torch.empty(1 << 29, dtype=torch.float32, device="cuda")
        blob.fill_(float("nan"))
        del blob
    out = superlinear_attention(q, k, v, qs, cfg, attention_mask=mask, backend="triton")
    if grad:
        out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    ref = superlinear_attention(*(x.detach().float() for x in (q, k, v, qs)), cfg, attention_mask=mask,
                                backend="reference")
    print(sys.argv[1:], "rel err", ((out.float() - ref).norm() / ref.norm()).item(), flush=True)


if __name__ == "__main__":
    main()
