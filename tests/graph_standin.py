"""A CPU stand-in for the CUDA graphs of `slkernels.decode_graphs`: "capturing" runs the function once
on the static buffers, "replaying" runs it again on them and writes the result into the captured output, as a
graph's replay writes its kernels' outputs. Tests swap it in for `decode_graphs._capture`."""

from __future__ import annotations


class Replay:
    def __init__(self, fn, inputs):
        self.fn, self.inputs, self.out = fn, inputs, fn(*inputs)

    def replay(self):
        self.out.copy_(self.fn(*self.inputs))


def standin_capture(captures: list):
    """A `decode_graphs._capture` that records each stand-in graph it makes in `captures`."""
    def capture(fn, inputs):
        captures.append(Replay(fn, inputs))
        return captures[-1], captures[-1].out
    return capture
