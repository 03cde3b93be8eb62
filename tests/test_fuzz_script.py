"""`benchmarks/fuzz_triton.py`, the randomised row-by-row check: its judging on tensors whose answer is known, and one
case end to end under the Triton interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from slkernels import SuperlinearConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # imported as a module, not executed from a file: its dataclass needs
import fuzz_triton as fuzz  # noqa: E402  (its module in sys.modules)


def _case(kind="prefill"):
    return fuzz.Case(0, kind, SuperlinearConfig.released().to_dict(), "bfloat16", 1, (2, 1), 8, 5, list(range(5)),
                     [0], 1.0)


def test_one_wrong_row_fails_where_a_whole_tensor_norm_would_not():
    """1 wrong (row, head) of 2 x 500: about 0.045 of the whole tensor's norm, far over its own row's bound."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 2, 500, 16, generator=g, dtype=torch.float64)
    mine = ref + 1e-4 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
    mine[0, 1, 321] = torch.randn(16, generator=g, dtype=torch.float64)
    assert ((mine - ref).norm() / ref.norm()).item() < 0.1
    errs = fuzz.row_errors(mine, ref)
    case = _case()
    assert not fuzz.judge("out", errs, 3e-2, case, None, None, None, None, torch.arange(500), list(range(500)),
                          ties_ok=False)
    (fail,) = case.results["out"]["fails"]
    assert (fail["h"], fail["row"]) == (1, 321) and case.results["out"]["over"] == 1
    mine[0, 1, 321] = ref[0, 1, 321]
    assert fuzz.judge("out", fuzz.row_errors(mine, ref), 3e-2, case, None, None, None, None, torch.arange(500),
                      list(range(500)), ties_ok=False)


def test_a_row_over_its_bound_at_a_tie_of_the_kth_score_is_excused():
    """W = 0, k = 1: row 8's candidates are 8, 5 and 0 (offsets i^2). With k[5] = k[8], k[0] = -k[8] and the search
    query along k[8], its two best scores are equal, so either pick is right; row 9's are not."""
    cfg = SuperlinearConfig(sw_index=0, num_spans=1, search_power=0.5, span_power=0.5, backward_factor=0.0,
                            forward_factor=0.0)
    g = torch.Generator().manual_seed(1)
    k = torch.randn(1, 1, 12, 4, generator=g, dtype=torch.float64)
    qs = torch.randn(1, 1, 12, 4, generator=g, dtype=torch.float64)
    k[0, 0, 5], k[0, 0, 0], qs[0, 0, 8] = k[0, 0, 8], -k[0, 0, 8], 3.0 * k[0, 0, 8]
    pos, mask = torch.arange(12), torch.ones(1, 12, dtype=torch.long)
    assert fuzz.tie_margin(cfg, qs, k, mask, pos, 0, 0, 8) == 0.0
    assert fuzz.tie_margin(cfg, qs, k, mask, pos, 0, 0, 9) > fuzz.TIE
    errs = torch.zeros(1, 1, 12)
    errs[0, 0, 8] = 1.0
    case = _case()
    assert fuzz.judge("out", errs, 3e-2, case, cfg, qs, k, mask, pos, list(range(12)))
    assert case.results["out"]["ties"] == 1 and not case.results["out"]["fails"]
    errs[0, 0, 8], errs[0, 0, 9] = 0.0, 1.0
    assert not fuzz.judge("out", errs, 3e-2, case, cfg, qs, k, mask, pos, list(range(12)))


def test_a_case_runs_end_to_end_under_the_interpreter_and_one_line_refuses_without_it(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "fuzz_triton.py"), "--case",
                          "5057", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ok   seed=5057 grad" in run.stdout and "1 cases ({'grad': 1}), 0 failed" in run.stdout
    assert (tmp_path / "fuzz.json").exists()
    env.pop("TRITON_INTERPRET")
    env.pop("SLKERNELS_TRITON_INTERPRET", None)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_triton.py")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 1 and run.stderr.strip() == (
        "no CUDA device: set TRITON_INTERPRET=1 to run tiny cases under the Triton interpreter")


def test_decode_cases_with_a_decode_setting_run_under_the_interpreter_and_bad_options_are_one_line(tmp_path):
    """`--kinds decode --set "SPAN_DOT=True"`: seed 4 draws a decode case of a GQA 2:1 cache with spans beside its
    window, run with the spans' chunks on the tensor cores; an unknown kind or setting is one error line."""
    import settings
    from slkernels.triton_ops import decode

    before = decode.SPAN_DOT
    with settings.overridden(decode, settings.parse(decode, "SPAN_DOT=True; SPAN_FILL=None")):
        assert decode.SPAN_DOT is True and decode.SPAN_FILL is None
    assert decode.SPAN_DOT == before and decode.SPAN_FILL is not None
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    script = [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "fuzz_triton.py")]
    run = subprocess.run([*script, "--case", "4", "--kinds", "decode", "--set", "SPAN_DOT=True", "--out",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ok   seed=4 decode" in run.stdout and "1 cases ({'decode': 1}), 0 failed" in run.stdout
    record = json.loads((tmp_path / "fuzz.json").read_text())
    assert record["kinds"] == ["decode"] and record["set"] == ["SPAN_DOT=True"]
    for args, line in ((["--kinds", "nope"], "error: --kinds nope: the kinds are prefill,chunk,decode,grad"),
                       (["--set", "NO_SUCH=1"],
                        "error: --set NO_SUCH=1: slkernels.triton_ops.decode has no setting 'NO_SUCH'")):
        run = subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == line, run.stderr[-2000:]
