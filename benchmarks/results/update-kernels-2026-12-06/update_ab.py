"""One kept-sums update (`KeySums.update` after one key changed: its sign flipped), B=1, 2 KV heads, D=128, bf16, replayed from a CUDA graph,
at several cache lengths: the update before its small torch operations moved into kernels (`prefix_before.py`, commit
670a0e0's `kernels/triton_ops/prefix.py`, copied by `call.sh` into the package as `_prefix_before`) against the update
as it is now. At each length the two graphs alternate over several rounds in one process; then each one's sums against
float64, and whether both wrote the same blocks and chose the same centre and scale.
Usage: python3 update_ab.py OUT.json [LENGTH ...]"""
import importlib
import json
import sys

import torch

lengths = [int(x) for x in sys.argv[2:]] or [1 << 14, 1 << 16, 1 << 18, 1 << 20]
modules = {"before (torch between kernels)": "slkernels.triton_ops._prefix_before",
           "now (six kernels)": "slkernels.triton_ops.prefix"}


def graphed(module, k, first):
    sums = importlib.import_module(module).KeySums()
    for _ in range(3):  # the arrays made, then updates of one changed key
        k[:, :, -1].neg_()
        sums.update(k, first)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            k[:, :, -1].neg_()
            sums.update(k, first)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        k[:, :, -1].neg_()
        prefix = sums.update(k, first)
    return graph, sums, prefix


def time_graph(graph, reps=50):
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


rows = []
for length in lengths:
    k = torch.randn(1, 2, length, 128, device="cuda", dtype=torch.bfloat16)
    first = torch.zeros(1, dtype=torch.int64, device="cuda")
    made = {name: graphed(module, k, first) for name, module in modules.items()}
    times = {name: [] for name in modules}
    for _ in range(5):
        for name, (graph, _, _) in made.items():
            times[name].append(time_graph(graph))
    errors, chosen = {}, {}
    for name, (graph, sums, prefix) in made.items():
        graph.replay()  # one more key changed, the same for both below
        torch.cuda.synchronize()
        centred = k.double() - prefix.center.double()[:, :, None, :]
        exact = torch.cat([torch.zeros_like(centred[:, :, :1]), centred.cumsum(2)], 2)
        got = prefix.sums()[:, :, :length + 1]
        errors[name] = ((got - exact).abs().max() / exact.abs().max()).item()
        chosen[name] = (sums.written.sum(-1).tolist(), prefix.scale.flatten().tolist())
        k[:, :, -1].neg_()  # back to what the other module's replay starts from
    row = dict(length=length, rounds=times, median={n: sorted(t)[len(t) // 2] for n, t in times.items()},
               largest_error_relative_to_largest_sum=errors,
               same_blocks_and_scales=len({json.dumps(c) for c in chosen.values()}) == 1, chosen=chosen)
    rows.append(row)
    print(length, json.dumps(row["median"]), json.dumps(errors), row["same_blocks_and_scales"], flush=True)
    del made, k
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), unit="ms per graph-replayed update", rows=rows),
          open(sys.argv[1], "w"), indent=1)
