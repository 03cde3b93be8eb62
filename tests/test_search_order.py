"""The span-mean search's shared-end row order (`search.shared_end_order`, plain torch on the CPU).

Any permutation of the rows gives the search's results (the interpreter cases with `SHARED_ENDS` check that); what
the order is for is that a row runs beside the row whose spans start at the running-sum row where its own end, so
that the pair reads that row from memory once. Checked here against the span rule itself
(`geometry.span_bounds`), not against the order's own formula.
"""

from __future__ import annotations

import pytest
import torch
from slkernels import SuperlinearConfig
from slkernels.geometry import anchor_table, span_bounds, window_length
from slkernels.triton_ops.search import shared_end_order

SMALL = dict(sw_index=2, num_spans=3, search_power=0.5, span_power=0.5, backward_factor=2.0, forward_factor=1.0)
CONFIGS = {"small": SuperlinearConfig(**SMALL), "released": SuperlinearConfig.released(),
           "balanced": SuperlinearConfig.balanced()}


@pytest.mark.parametrize("setting", sorted(CONFIGS))
@pytest.mark.parametrize("segment", [None, 1, 3])
@pytest.mark.parametrize("length, start, pad", [(97, 0, 0), (61, 40, 5), (1, 99, 0)])
def test_order_is_a_permutation_of_the_rows(setting, segment, length, start, pad):
    pos = torch.arange(start, start + length)
    order = shared_end_order(CONFIGS[setting], pos, torch.tensor([pad, 0]), start + length, segment)
    assert order.dtype == torch.int32
    assert torch.equal(order.sort().values, torch.arange(length, dtype=torch.int32))


def _shared_pairs(config, order, pos, s0):
    """Per pair of consecutive rows in `order`: whether the first's span ends where the second's starts (hi + 1 ==
    lo, span_bounds) for one candidate offset, and whether that pair counts: both rows reach the offset and neither
    bound is clipped (the first's hi below its window, the second's lo after s0)."""
    offsets = anchor_table(config, int(pos.max()) + 1)
    o = offsets[len(offsets) // 2]  # an offset from the middle of the table
    cur, nxt = pos[order[:-1].long()], pos[order[1:].long()]
    t_cur, t_nxt = cur + 1 - s0, nxt + 1 - s0
    _, hi_c = span_bounds(config, cur + 1 - o, t_cur, s0, cur)
    lo_n, _ = span_bounds(config, nxt + 1 - o, t_nxt, s0, nxt)
    counted = (t_cur >= o) & (t_nxt >= o) & (hi_c < cur - window_length(config)) & (lo_n > s0)
    return hi_c + 1 == lo_n, counted


@pytest.mark.parametrize("setting", ["released", "balanced"])
def test_chains_put_rows_that_share_an_end_side_by_side(setting):
    config, length, s0 = CONFIGS[setting], 20000, torch.tensor(7)
    pos = torch.arange(length)
    shared, counted = _shared_pairs(config, shared_end_order(config, pos, s0[None], length), pos, s0)
    assert counted.sum() > 1000
    assert shared[counted].float().mean() > 0.95  # chains are cut only where one ends
    plain, counted = _shared_pairs(config, torch.arange(length, dtype=torch.int32), pos, s0)
    assert plain[counted].float().mean() < 0.01  # row order never puts such rows side by side
    segments, counted = _shared_pairs(config, shared_end_order(config, pos, s0[None], length, 4), pos, s0)
    assert 0.6 < segments[counted].float().mean() < 0.8  # three of every four neighbours in segments of four
