"""Host cost of each torch call a replayed decode makes, on this GPU's host (us per call, 20000 calls)."""
import time

import torch

dev = torch.device("cuda")
q, qs = (torch.randn(1, 32, 1, 128, device=dev, dtype=torch.bfloat16) for _ in range(2))
pos = torch.tensor([1000], device=dev)
bq, bqs, bpos = q.clone(), qs.clone(), pos.clone()
out = torch.randn(1, 32, 1, 128, device=dev, dtype=torch.bfloat16)
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    out.add_(bq)
torch.cuda.synchronize()


def per_call(fn, n=20000):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return round(host, 2)


rows = {
    "foreach_copy_ 3 (2 dtypes)": lambda: torch._foreach_copy_([bq, bqs, bpos], [q, qs, pos]),
    "foreach_copy_ 2 (bf16)": lambda: torch._foreach_copy_([bq, bqs], [q, qs]),
    "3 copy_": lambda: (bq.copy_(q), bqs.copy_(qs), bpos.copy_(pos)),
    "1 copy_": lambda: bq.copy_(q),
    "clone": lambda: out.clone(),
    "graph.replay (1 kernel)": g.replay,
    "current_stream().cuda_stream": lambda: torch.cuda.current_stream(dev).cuda_stream,
    "_cuda_getCurrentRawStream": lambda: torch._C._cuda_getCurrentRawStream(0),
    "is_current_stream_capturing": torch.cuda.is_current_stream_capturing,
    "compiler.is_compiling": torch.compiler.is_compiling,
    "data_ptr+shape+stride": lambda: (q.data_ptr(), q.dtype, q.shape, q.stride()),
}
for name, fn in rows.items():
    print(f"{name:34s} {per_call(fn):8.2f} us")
