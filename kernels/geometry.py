"""Integer geometry of Superlinear attention: anchor offsets, window length, span extents.

All of it depends only on the config and on t (tokens seen), never on the data, so it is computed
once on the host in float64 / exact integers and handed to every backend as integer tables. Computing
it in one place is what keeps the reference, the Triton kernels and the decode path agreeing to the
last row: a float32 `pow` on the device can round a span edge differently. A float64 `pow` can too: numpy's
and the C library's differ by an ulp here and there, and where x ** y lies within that ulp of an integer the ulp
moves a floor or a ceiling (3125 ** 0.2 is 5.0 from numpy and 5.000000000000001 from `math.pow`, the float64
nearest to the exact 5.00000000000000045 for the float64 0.2). So every power here is the float64 nearest to its
exact value, the same on every machine: numpy's where that cannot move a floor or ceiling, and the few results
within 1e-9 of an integer taken again from 60-digit decimal arithmetic (`_power`).

The tables are cached per (config, device, capacity), the capacity a power of two above the largest t asked for
(`geometry_tables`): a decode loop whose cache grows by one token per step copies them to the device O(log n)
times over n steps, and every other step only looks them up (no tensor is built or read on the host).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from decimal import Context, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only: config imports this module for window_length
    from .config import SuperlinearConfig

__all__ = ["anchor_offset", "window_length", "SpanTables", "span_tables", "span_reach", "anchor_table", "span_bounds",
           "GeometryTables", "geometry_tables"]


def _integer_inverse(power: float) -> int | None:
    """1/power when it is an integer (p = 1/2, 1/3, ...), so offsets can be computed exactly."""
    inverse = 1.0 / power
    nearest = round(inverse)
    return nearest if nearest >= 1 and abs(inverse - nearest) < 1e-9 else None


# The decimal arithmetic that gives a power near an integer its float64 rounding (`_power`), and how near is near
# (relative; numpy's float64 power is within a few ulps of the exact value).
_DECIMAL = Context(prec=60)
NEAR = 1e-9


def _power(base: int, exponent: float) -> float:
    """base ** exponent correctly rounded to float64 (the exponent's float64 value taken exactly)."""
    return float(_DECIMAL.power(Decimal(base), Decimal(exponent)))


def _near_integer(x: np.ndarray) -> np.ndarray:
    return np.abs(x - np.round(x)) <= NEAR * np.maximum(np.abs(x), 1.0)


# Offsets at or past 2^64 lie beyond every position; `anchor_offset` gives this one value for all of them, so a tiny
# search power never builds a power of astronomic size (nor overflows float64).
BEYOND = 1 << 64


def anchor_offset(i: int, power: float) -> int:
    """o(i) = floor(i ** (1/p)): exact in integers when 1/p is an integer, else of i ** (1/p) in float64, the power
    correctly rounded (module docstring); BEYOND where it is 2^64 or more."""
    if i > 1 and math.log2(i) / power >= 64:
        return BEYOND
    exponent = _integer_inverse(power)
    if exponent is not None:
        return int(i) ** exponent
    grown = float(i) ** (1.0 / power)
    if _near_integer(np.float64(grown)):
        grown = _power(int(i), 1.0 / power)
    return math.floor(grown)


def window_length(config: SuperlinearConfig) -> int:
    """W = o(sw + 1) - 1."""
    return anchor_offset(config.sw_index + 1, config.search_power) - 1


def _bucket(n: int) -> int:
    """Round table sizes up to a power of two so caches are reused across nearby lengths."""
    return 1 << max(6, int(n).bit_length())


@lru_cache(maxsize=64)
def _anchor_offsets_cpu(sw_index: int, search_power: float, t_limit: int) -> torch.Tensor:
    offsets = []
    i = sw_index + 1
    while True:
        o = anchor_offset(i, search_power)
        if o > t_limit:
            break
        offsets.append(o)
        i += 1
    return torch.tensor(offsets, dtype=torch.int64)


@dataclass(frozen=True)
class SpanTables:
    """Per-t span reach: a span around anchor a covers [a - back[t], a + fwd[t]] before clipping."""

    back: torch.Tensor  # int64 [t_limit + 1]
    fwd: torch.Tensor  # int64 [t_limit + 1]


def _ceil_of_power(factor: float, t: np.ndarray, power: float) -> np.ndarray:
    """ceil(factor * t ** power) in float64 for the integers t, the power correctly rounded wherever the product
    lies within rounding of an integer (module docstring)."""
    scaled = factor * np.power(t.astype(np.float64), power)
    out = np.ceil(scaled)
    if factor != 0.0:
        for j in np.flatnonzero(_near_integer(scaled)):
            out[j] = math.ceil(factor * _power(int(t[j]), power))
    return out.astype(np.int64)


def span_reach(config: SuperlinearConfig, t: int) -> tuple[int, int]:
    """(ceil(b_b t^rho), ceil(b_f t^rho)) for one t: `span_tables`' entries at t without building the tables."""
    at = np.array([t])
    return (int(_ceil_of_power(config.backward_factor, at, config.span_power)[0]),
            int(_ceil_of_power(config.forward_factor, at, config.span_power)[0]))


@lru_cache(maxsize=64)
def _span_tables_cpu(span_power: float, backward_factor: float, forward_factor: float, t_limit: int) -> SpanTables:
    t = np.arange(t_limit + 1)
    back = _ceil_of_power(backward_factor, t, span_power)
    fwd = _ceil_of_power(forward_factor, t, span_power)
    return SpanTables(torch.from_numpy(back), torch.from_numpy(fwd))


class GeometryTables:
    """Every table of one config for t = 0..capacity on one device, and what the host reads of them.

    Built once per (config, device, capacity) by `geometry_tables` and kept for the life of the process: a
    CUDA graph that captured a call holds the device addresses of its tables. The host reads bounds (anchor
    counts, span lengths) from plain Python / numpy copies, never from a tensor.
    """

    __slots__ = ("capacity", "width", "spans", "offsets", "span_len", "_offsets_host", "_span_len_host", "_last")

    def __init__(self, config: SuperlinearConfig, capacity: int, device: torch.device | str):
        device = torch.device(device)
        host_offsets = _anchor_offsets_cpu(config.sw_index, config.search_power, capacity)
        host_spans = _span_tables_cpu(config.span_power, config.backward_factor, config.forward_factor, capacity)
        self.capacity = capacity
        self.width = window_length(config)
        self.offsets = host_offsets.to(device)  # int64, o(i) <= capacity (the host tensor itself on the CPU)
        self.spans = SpanTables(host_spans.back.to(device), host_spans.fwd.to(device))  # int64 [capacity + 1] each
        self.span_len = host_spans.back + host_spans.fwd + 1  # int64 [capacity + 1] on the host
        self._offsets_host = host_offsets.tolist()
        self._span_len_host = self.span_len.numpy()
        self._last = (-1, self.offsets[:0])  # (count, offsets[:count]) of the latest anchor_table call

    def anchor_count(self, t_max: int) -> int:
        """How many offsets are <= t_max: the candidates of a row with t_max tokens seen."""
        return bisect_right(self._offsets_host, t_max)

    def anchors(self, t_max: int) -> torch.Tensor:
        """The device offsets <= t_max; the same view as long as their count does not change."""
        count = self.anchor_count(t_max)
        last = self._last
        if last[0] != count:
            last = self._last = (count, self.offsets[:count])
        return last[1]

    def span_length(self, t: int) -> int:
        """back[t] + fwd[t] + 1: the longest span of a row with t <= capacity tokens seen."""
        return int(self._span_len_host[t])


# (config, device, capacity) -> tables; never emptied (see GeometryTables). A context growing to n tokens builds
# O(log n) of them: capacities are powers of two.
_TABLES: dict[tuple, GeometryTables] = {}


def _build_tables(config: SuperlinearConfig, capacity: int, device: torch.device | str) -> GeometryTables:
    return GeometryTables(config, capacity, device)


def geometry_tables(config: SuperlinearConfig, t_max: int, device: torch.device | str = "cpu") -> GeometryTables:
    """The cached tables of `config` on `device` covering t = 0..t_max (capacity: the next power of two above
    t_max, at least 64). Only a new capacity, config or device builds (and copies to the device) anything."""
    capacity = _bucket(t_max)
    if isinstance(device, str):
        device = torch.device(device)
    key = (config, device, capacity)
    tables = _TABLES.get(key)
    if tables is None:
        tables = _TABLES[key] = _build_tables(config, capacity, device)
    return tables


def anchor_table(config: SuperlinearConfig, t_max: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """o(i) for i = sw+1, sw+2, ... up to the last one <= t_max (int64, increasing).

    Candidate j of a query with t tokens seen sits at ``q + 1 - table[j]`` and exists while
    ``table[j] <= t``; the first one is ``q - W``, just before the window.
    """
    return geometry_tables(config, t_max, device).anchors(t_max)


def span_tables(config: SuperlinearConfig, t_max: int, device: torch.device | str = "cpu") -> SpanTables:
    """ceil(b_b * t^rho) and ceil(b_f * t^rho) for t = 0..t_max and beyond (float64 on the host)."""
    return geometry_tables(config, t_max, device).spans


def span_bounds(config: SuperlinearConfig, anchor: torch.Tensor, t: torch.Tensor, s0: torch.Tensor,
                pos: torch.Tensor, tables: SpanTables | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The inclusive key range [lo, hi] of the span an anchor opens for a query at `pos` with `t` tokens seen.

    lo = max(anchor - ceil(b_b t^rho), s0), hi = min(anchor + ceil(b_f t^rho), pos - W). The arguments
    broadcast against each other (int64 tensors); `tables` may pass `span_tables(config, t.max())` when
    the caller already holds them. This is the one place the span rule is written for the PyTorch code.
    """
    if tables is None:
        tables = span_tables(config, max(int(t.max()), 1) if t.numel() else 1, anchor.device)
    t = t.clamp(min=0)
    lo = torch.maximum(anchor - tables.back[t], s0)
    hi = torch.minimum(anchor + tables.fwd[t], pos - window_length(config))
    return lo, hi
