"""Count the aten operations a piece of code runs, find those that read a tensor back to the host, and record Triton
launches instead of running them."""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

# Operations that make the host wait for the device (or read a tensor on the host): item()/int()/bool()/float() of a
# tensor, data-dependent shapes, whole-tensor comparisons.
HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique",
              "aten.equal", "aten.is_nonzero", "aten.item")


class OpCounter(TorchDispatchMode):
    """Counts every aten operation run under it."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def host_reads(self) -> dict:
        return {op: n for op, n in self.ops.items() if op.startswith(HOST_READS)}

    def launches(self) -> dict:
        """Operations that run a kernel on a GPU: all but allocations and views."""
        return {op: n for op, n in self.ops.items() if not op.startswith(NO_LAUNCH)}


# Operations that launch no kernel: allocations and views.
NO_LAUNCH = ("aten.empty", "aten.slice", "aten.view", "aten.expand", "aten.as_strided", "aten.select", "aten.alias",
             "aten.unsqueeze", "aten.squeeze", "aten.permute", "aten.t.", "aten.transpose", "aten.detach",
             "aten._reshape_alias")


class LaunchRecorder:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **meta)`` appends (name, grid) to `log` and runs nothing."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __getitem__(self, grid):
        return lambda *args, **meta: self.log.append((self.name, grid))
