"""Where a kept-sums update's time goes: `KeySums.update` over a 1M-key cache (B=1, 2 KV heads, D=128, bf16) after
one new key, under the torch profiler (CUDA kernel table). Usage: python3 profile_update.py [LENGTH]"""
import sys

import torch
from slkernels.triton_ops.prefix import KeySums

length = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
first = torch.zeros(1, dtype=torch.int64, device="cuda")
sums = KeySums()
sums.update(k, first)
for _ in range(3):
    k[:, :, -1] += 1
    sums.update(k, first)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    k[:, :, -1] += 1
    sums.update(k, first)
end.record()
torch.cuda.synchronize()
print(f"update at {length}: {start.elapsed_time(end) / 20:.3f} ms (eager, with the key change)")
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(10):
        k[:, :, -1] += 1
        sums.update(k, first)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
