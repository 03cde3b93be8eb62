"""`LayerState`: what the kernels may keep from one call of a layer to the next.

A call with the "span_mean" search key reads the running sums of the layer's whole key cache. Built anew on every
call they cost a pass over the cache that writes three float16 parts per key and column (about 2 ms per layer and
decode step at 1M keys on an H100); a `LayerState` passed to every call of one layer (prefill chunks and decode
steps without gradients) lets the Triton backend keep them and write only the blocks of keys that changed (`slkernels.triton_ops.prefix.KeySums`, which checks that on the
device from the keys themselves, so nothing is assumed about how the cache changes). The reference ignores it.

Kept here, apart from the Triton code, so that callers can hold one without importing Triton.
"""

from __future__ import annotations

__all__ = ["LayerState", "KEEP_MIN_KEYS"]

# Shortest key cache whose span-mean sums are kept. Below it a whole build may cost less than the update of kept sums,
# whose fixed cost is its six kernels (one H100, graph-replayed decode at the attention shape, kept against rebuilt:
# 0.083 against 0.107 ms a step at 16K, 0.116 against 0.206 at 64K, 0.439 against 1.896 at 1M; shorter caches not
# timed: benchmarks/results/update-kernels-2026-12-06).
KEEP_MIN_KEYS = 1 << 14


class LayerState:
    """Per-layer storage a backend fills on demand. One object per attention layer (and per cache, where a model
    serves several caches at once): calls of other layers or caches through the same object stay correct but
    rebuild what it holds on every call. Memory: with the span-mean key, about 3.4 times the layer's K cache."""

    __slots__ = ("key_sums", "_graphed", "__weakref__")

    def __init__(self) -> None:
        self.key_sums = None  # the Triton backend's `KeySums`, made on the first span-mean call without gradients
        self._graphed: list[tuple] = []  # arrays that CUDA graphs recorded outside `superlinear_attention` may use

    def clear(self) -> int:
        """Drop what is kept (its memory too) and return how many bytes that was; the next call builds it again.
        Arrays kept for graphs recorded through this state (`hold_for_graphs`) go too: clear only once those graphs
        are dropped (`torch.compiler.reset()`)."""
        arrays = {t.data_ptr(): t.numel() * t.element_size()
                  for t in (*self.held(), *(t for kept in self._graphed for t in kept))}
        self.key_sums = None
        self._graphed.clear()
        return sum(arrays.values())

    def hold_for_graphs(self) -> None:
        """Keep the arrays held now for as long as this state lives, whatever later calls make. For a caller that
        records CUDA graphs of calls through this state itself (torch.compile's CUDA-graph trees, where
        `superlinear_attention` cannot name the arrays in a replay key): such a graph reads and writes the arrays'
        addresses at every replay, so a later call that needs larger arrays must not free these. A graph replayed
        over them later is still exact: which rows to write is checked on the device against the keys."""
        held = self.held()
        if held and all(kept[0] is not held[0] for kept in self._graphed):
            self._graphed.append(held)

    def held(self) -> tuple:
        """The tensors kept now: a CUDA graph of a call through this state reads and writes them, so its replay key
        names them by address (`slkernels.api`): a graph is replayed only where the arrays kept now are found at
        the addresses it was captured with."""
        return () if self.key_sums is None else self.key_sums.tensors()

    @staticmethod
    def keeps(config, k) -> bool:
        """Whether a call with `config` over keys `k` [B, H_kv, L_kv, D] keeps anything here: span-mean calls over
        at least KEEP_MIN_KEYS keys (read at call time, so that it can be changed)."""
        return config.search_key == "span_mean" and k.shape[2] >= KEEP_MIN_KEYS

    def allocates(self, config, k) -> bool:
        """Whether a call with `config` over keys `k` would make (or remake) what it keeps: a call that must never
        be captured in a graph, whose memory pool would own it. A call that keeps sums (`keeps`) before the first
        one, or with keys the kept arrays do not fit (another batch or head count, a longer cache)."""
        if not self.keeps(config, k):
            return False
        return self.key_sums is None or not self.key_sums.fits(k)
