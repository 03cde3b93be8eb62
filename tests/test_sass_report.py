"""The kernels' Hopper (sm_90) machine code, compiled on the CPU: properties that only GPU timings would show.

`benchmarks/sass_report.py` compiles a kernel with the specialisation of a benchmark-shaped launch and
disassembles it with the `cuobjdump` of Triton's package. An atomic add left at Triton's default
acquire-release order puts a device-wide fence and an L1 invalidation around every element it adds (the span
forward pass ran 113 ms at 256K on an H200 with them, 85 ms without); the attention loops must issue
warp-group tensor-core products (HGMMA), not the older per-warp ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from module_file import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sass_report.py"


@pytest.fixture(scope="module")
def sass_report():
    triton = pytest.importorskip("triton")
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not os.access(tool, os.X_OK):
        pytest.skip(f"Triton's package has no cuobjdump at {tool}")
    return load_module(SCRIPT)


@pytest.mark.parametrize(
    "kernel, tiles",
    [("entry:1", (64, 64, 4, 3)), ("entry:4", (64, 32, 4, 3)), ("dkdv:3", (64, 64, 4, 3))],
)
def test_attention_loops_use_warp_group_products_without_device_fences(sass_report, kernel, tiles):
    r = sass_report.report(kernel, 262144, tiles, None)
    assert r["gpu_fences"] == 0, f"{kernel}: {r['gpu_fences']} device-wide fences (an acquire-release atomic?)"
    assert dict(r["loop_mix"]).get("HGMMA", 0) > 0, f"{kernel}: no HGMMA in the loop: {r['loop_mix']}"
    assert r["registers"] and r["shared_bytes"] > 0


@pytest.mark.parametrize("kernel", ["decode", "decode:rows", "decode:dot", "combine", "decode:pdl", "combine:pdl"])
def test_decode_kernels_compile_for_hopper_without_spills(sass_report, kernel):
    """Decode at 1M keys with DECODE_TILE's blocks, WINDOW_TILE's and COMBINE_TILE's: the partial kernel (its window
    chunks by KV head, or by query row; its spans' chunks on the tensor cores, `decode:dot`) and the combine,
    without spilled registers or device-wide fences; with programmatic dependent launch (decode.DECODE_PDL) the
    partial kernel gives the combine its go-ahead and waits for the search (a span before it reads the lists, every
    program before it writes), the combine waits for the partial kernel, and without it neither holds such an
    instruction. A chunk's loop by query row (a span's, and with the window by query row the window's: `decode:rows`
    compiles no other loop) copies its next blocks ahead (`cp.async`): a plain `range` loop without products is not
    pipelined, and each block then waits for its own loads (released decode 64K took 30.5 us against 26.7 on an
    H200). With GATES_BEFORE_WAIT the partial kernel gives the go-ahead twice (a window's program at its start, a
    span's after its wait) and the combine loads the search's lists before its wait; without it, once, and the
    combine loads nothing before its wait."""
    from slkernels.triton_ops.decode import COMBINE_TILE, DECODE_TILE, GATES_BEFORE_WAIT

    # the combine launches with Triton's default stages (3)
    warps, stages = (COMBINE_TILE[1], 3) if kernel.startswith("combine") else DECODE_TILE[2:4]
    r = sass_report.report(kernel, 1 << 20, (1, 16, warps, stages), None)
    assert r["stack_bytes"] == 0, f"{kernel}: {r['stack_bytes']} B spilled"
    assert r["gpu_fences"] == 0, f"{kernel}: {r['gpu_fences']} device-wide fences"
    go_aheads = 2 if GATES_BEFORE_WAIT else 1
    expected = {"decode:pdl": {"launch_dependents": go_aheads, "wait": 2}, "combine:pdl": {"wait": 1}}.get(kernel, {})
    assert dict(r["grid_dependency"]) == expected
    if kernel == "combine:pdl":  # the top-k lists' anchors and scores
        assert r["loads_before_wait"] == (2 if GATES_BEFORE_WAIT else 0), r["loads_before_wait"]
    if kernel == "decode:rows":
        assert r["async_copies"] > 0, "the chunks' loop by query row is not pipelined (no cp.async)"
    if kernel == "decode:dot":  # two loops (the window's chunks and a span's), both on the tensor cores, both pipelined
        assert [products for _, products, _ in r["innermost_loops"]] == [True, True] and r["async_copies"] > 0, r
        # the span's loop rescales its accumulator behind a branch (decode.LAZY_RESCALE); the window's does not
        assert [behind > 64 for _, _, behind in r["innermost_loops"]] == [False, True], r["innermost_loops"]


@pytest.mark.parametrize("kernel", ["search", "search:span_mean", "search:hi_only"])
def test_search_kernels_compile_for_hopper_without_spills(sass_report, kernel):
    """The router search at SEARCH_TILES' tilings (the anchor key's 32 anchors per block, the span mean's 16, and the
    hi-only timing loop at the span mean's), each with its products on the tensor cores, nothing spilled and no
    device-wide fence."""
    from slkernels.triton_ops.search import SEARCH_TILES

    block, warps, stages = SEARCH_TILES["anchor" if kernel == "search" else "span_mean"]
    r = sass_report.report(kernel, 262144, (0, block, warps, stages), None)
    assert r["stack_bytes"] == 0, f"{kernel}: {r['stack_bytes']} B spilled"
    assert r["gpu_fences"] == 0, f"{kernel}: {r['gpu_fences']} device-wide fences"
    assert r["loop_instructions"] > 0 and dict(r["loop_mix"]).get("HMMA", 0) > 0, r["loop_mix"]


def test_warp_specialised_span_pass_compiles_for_hopper_without_spills(sass_report):
    """The span pass of `attend_ws` at WS_TILES (Gluon: a loader warp and two consumer warp groups): its consumers'
    loop issues warp-group products on 128-key blocks with the query rows read from shared memory, the launch holds
    168 registers a thread and its ring of key and value blocks, nothing spilled. Gluon's interface moves between
    Triton releases; this is where a change shows without a GPU."""
    from slkernels.triton_ops.attend_ws import WS_TILES

    bm, bn, stages = WS_TILES[:3]
    r = sass_report.report("ws:1", 262144, (bm, bn, 4, stages, 168), None)
    assert r["stack_bytes"] == 0, f"{r['stack_bytes']} B spilled"
    assert r["registers"] == 168 and r["shared_bytes"] > 2 * stages * bn * 128 * 2
    assert dict(r["loop_mix"]).get("HGMMA", 0) > 0, r["loop_mix"]


def test_warp_specialised_key_pass_compiles_for_hopper_without_spills_in_its_loop(sass_report):
    """dk/dv of `attend_bwd_ws` at WS_DKDV_TILES (Gluon: a loader warp group gathering rows by asynchronous copies,
    two consumer warp groups): the consumers' loop issues warp-group products, the probabilities and the scores'
    gradients as register operands, and reads no spilled value; the launch holds 168 registers a thread, each
    loader thread arrives on a slot's barrier once its copies land."""
    from slkernels.triton_ops.attend_bwd_ws import WS_DKDV_TILES

    bm, bn, stages = WS_DKDV_TILES[:3]
    r = sass_report.report("ws_dkdv:3", 262144, (bm, bn, 4, stages, 168), None)
    mix = dict(r["loop_mix"])
    assert mix.get("HGMMA", 0) > 0 and not {"LDL", "STL"} & set(mix), r["loop_mix"]
    assert r["registers"] == 168 and r["shared_bytes"] > 2 * 2 * bn * 128 * 2 + stages * 2 * bm * 128 * 2
    assert r["gpu_fences"] == 0


def test_warp_specialised_span_dq_compiles_for_hopper_without_spills_in_its_loop(sass_report):
    """The span dq of `attend_ws` at WS_DQ_TILES: four warp-group products per key block (scores, the output
    gradient's product with the values, and the two accumulators' products with the keys), no spilled value read in
    the loop, 168 registers a thread, the query and output-gradient rows of both consumers in shared memory beside
    the ring."""
    from slkernels.triton_ops.attend_ws import WS_DQ_TILES

    bm, bn, stages = WS_DQ_TILES[:3]
    r = sass_report.report("ws:4", 262144, (bm, bn, 4, stages, 168), None)
    mix = dict(r["loop_mix"])
    assert mix.get("HGMMA", 0) >= 4 and not {"LDL", "STL"} & set(mix), r["loop_mix"]
    assert r["registers"] == 168 and r["shared_bytes"] > 2 * stages * bn * 128 * 2 + 2 * 2 * bm * 128 * 2
    assert r["gpu_fences"] == 0


def test_warp_specialised_span_dq_of_kept_outputs_compiles_for_hopper_without_spills(sass_report):
    """The span dq of `attend_ws` with one accumulator (MODE_DQ, dg from the kept span outputs) at WS_DQ1_TILES:
    three warp-group products per key block (scores, the output gradient's product with the values, the scores'
    gradients with the keys), fewer than the fused pass's four, and no spilled value read in the loop."""
    from slkernels.triton_ops.attend_ws import WS_DQ1_TILES

    bm, bn, stages = WS_DQ1_TILES[:3]
    one = sass_report.report("ws:3", 262144, (bm, bn, 4, stages, 168), None)
    fused = sass_report.report("ws:4", 262144, (bm, bn, 4, stages, 168), None)
    mix, mix_fused = dict(one["loop_mix"]), dict(fused["loop_mix"])
    assert 0 < mix.get("HGMMA", 0) < mix_fused["HGMMA"] and not {"LDL", "STL"} & set(mix), one["loop_mix"]
    assert one["registers"] == 168 and one["gpu_fences"] == 0
