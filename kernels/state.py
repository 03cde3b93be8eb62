"""`LayerState`: what the kernels may keep from one call of a layer to the next.

A decode step with the "span_mean" search key reads the running sums of the layer's whole key cache. Built anew on
every call they cost a pass over the cache that writes three float16 parts per key and column (about 2 ms per layer
and step at 1M keys on an H100); a `LayerState` passed to every call of one layer lets the Triton backend keep them
and write only the blocks of keys that changed (`slkernels.triton_ops.prefix.KeySums`, which checks that on the
device from the keys themselves, so nothing is assumed about how the cache changes). The reference ignores it.

Kept here, apart from the Triton code, so that callers can hold one without importing Triton.
"""

from __future__ import annotations

__all__ = ["LayerState"]


class LayerState:
    """Per-layer storage a backend fills on demand. One object per attention layer (and per cache, where a model
    serves several caches at once): calls of other layers or caches through the same object stay correct but
    rebuild what it holds on every call. Memory: with the span-mean key, about three times the layer's K cache."""

    __slots__ = ("key_sums",)

    def __init__(self) -> None:
        self.key_sums = None  # the Triton backend's `KeySums`, made on the first span-mean decode call

    def clear(self) -> None:
        """Drop what is kept (its memory too); the next call builds it again."""
        self.key_sums = None

    def held(self) -> tuple:
        """The tensors kept now: a CUDA graph of a call through this state reads and writes them, so its replay key
        names them by address (`slkernels.api`): a graph is replayed only where the arrays kept now are found at
        the addresses it was captured with."""
        return () if self.key_sums is None else self.key_sums.tensors()

    def allocates(self, config, k) -> bool:
        """Whether a call with `config` over keys `k` would make (or remake) what it keeps: a call that must never
        be captured in a graph, whose memory pool would own it. A span-mean call before the first one, or with keys
        the kept arrays do not fit (another batch or head count, a longer cache)."""
        if config.search_key != "span_mean":
            return False
        return self.key_sums is None or not self.key_sums.fits(k)
