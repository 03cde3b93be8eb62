"""benchmarks/span_mean_screening.py: the certification rule on scores whose answer is known, the candidate spans
against the naive reference's search rule, and a tiny run writing its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from module_file import load_module
from slkernels import SuperlinearConfig
from slkernels.naive import choose_spans

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def screening():
    return load_module(ROOT / "benchmarks" / "span_mean_screening.py")


def test_certify_proves_the_top_k_only_when_every_dropped_bound_lies_below_it(screening):
    exact = torch.tensor([[5.0], [4.0], [3.0], [1.0], [0.0]], dtype=torch.float64)
    screened = exact.clone()
    tight = torch.full_like(exact, 0.5)
    assert screening.certify(exact, screened, tight, k=2, keep=3).tolist() == [True]  # 4 > 1 + 0.5
    loose = torch.full_like(exact, 3.5)
    assert screening.certify(exact, screened, loose, k=2, keep=3).tolist() == [False]  # 4 < 1 + 3.5
    near = torch.tensor([[5.0], [4.0], [3.9], [1.0], [0.0]], dtype=torch.float64)
    misranked = torch.tensor([[5.0], [3.7], [4.1], [1.0], [0.0]], dtype=torch.float64)  # within 0.5 of `near`
    assert screening.certify(near, misranked, tight, k=2, keep=2).tolist() == [False]  # kept {5, 3.9}: 3.7 + .5 > 3.9
    assert screening.certify(near, misranked, tight, k=2, keep=3).tolist() == [True]  # the third kept one settles it


def test_candidate_spans_are_the_search_rule_of_the_naive_reference(screening):
    """The spans the model scores are exactly those `slkernels.naive.choose_spans` ranks (all kept, k large)."""
    cfg = SuperlinearConfig(sw_index=3, num_spans=1000, search_power=0.5, span_power=0.5, backward_factor=2.0,
                            forward_factor=1.0, search_key="span_mean")
    keys = torch.randn(300, 8, dtype=torch.float64)
    for pos in (40, 123, 299):
        st, en = screening.candidate_spans(cfg, pos)
        _, chosen = choose_spans(keys, torch.randn(8, dtype=torch.float64), cfg, pos, 0)
        assert sorted(zip(st.tolist(), en.tolist())) == sorted((span[0], span[-1]) for _, _, span in chosen)


def test_a_tiny_run_writes_every_format_and_fp16_hi_certifies_with_enough_kept(screening, tmp_path, monkeypatch):
    out = tmp_path / "screening.json"
    monkeypatch.setattr(sys, "argv", ["span_mean_screening.py", "--length", "4096", "--rows", "4", "--blocks", "256",
                                      "--keep-extra", "0,40", "--out", str(out)])
    screening.main()
    result = json.loads(out.read_text())
    for shape in ("released", "balanced"):
        formats = result["shapes"][shape]["formats"]
        assert set(formats) == {"fp16_hi", "fp8_local256"}
        assert formats["fp16_hi"]["undecided_share"]["k+40"] == 0.0
        assert 0 < formats["fp16_hi"]["error_rms_over_spread"] < formats["fp8_local256"]["error_rms_over_spread"]
