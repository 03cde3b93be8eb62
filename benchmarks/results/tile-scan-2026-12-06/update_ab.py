"""One kept-sums update (`KeySums.update` after one new key) at 1M keys (B=1, 2 KV heads, D=128, bf16), replayed
from a CUDA graph, for the update before the tile scan (`prefix_before.py`, commit 344bcac's
`kernels/triton_ops/prefix.py`, copied by `call.sh` into the package as `_prefix_before`) and as it is now; the two
graphs alternate over several rounds in one process; then each one's sums against float64. Usage: python3 update_ab.py OUT.json [LENGTH]"""
import importlib
import json
import sys

import torch

length = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
modules = {"before (torch float64 scan)": "slkernels.triton_ops._prefix_before",
           "tile scan": "slkernels.triton_ops.prefix"}
k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
first = torch.zeros(1, dtype=torch.int64, device="cuda")
graphs, outputs = {}, {}
for name, module in modules.items():
    sums = importlib.import_module(module).KeySums()
    for _ in range(3):  # the arrays made, then updates of one changed key
        k[:, :, -1] += 1
        sums.update(k, first)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            k[:, :, -1] += 1
            sums.update(k, first)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        k[:, :, -1] += 1
        prefix = sums.update(k, first)
    graphs[name], outputs[name] = graph, (sums, prefix)

times = {name: [] for name in modules}
for _ in range(5):
    for name, graph in graphs.items():
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(50):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times[name].append(start.elapsed_time(end) / 50)
# each module's kept sums against float64 sums of the keys its last replay saw, centred on its own centre
errors = {}
for name, graph in graphs.items():
    graph.replay()
    torch.cuda.synchronize()
    sums, prefix = outputs[name]
    centred = k.double() - prefix.center.double()[:, :, None, :]
    exact = torch.cat([torch.zeros_like(centred[:, :, :1]), centred.cumsum(2)], 2)
    got = prefix.sums()[:, :, :length + 1]
    errors[name] = ((got - exact).abs().max() / exact.abs().max()).item()
result = dict(device=torch.cuda.get_device_name(), length=length, unit="ms per graph-replayed update",
              rounds=times, median={name: sorted(t)[len(t) // 2] for name, t in times.items()},
              largest_error_relative_to_largest_sum=errors)
print(json.dumps(result["median"]), json.dumps(errors))
json.dump(result, open(sys.argv[1], "w"), indent=1)
