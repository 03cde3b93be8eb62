"""scripts/answer_attention.py on the shipped tiny teacher, whose answer is known: it retrieves the single needle
(100% exact match), through its first attention layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from module_file import load_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    return load_module(ROOT / "scripts" / "answer_attention.py")


def test_the_retrieving_layer_holds_the_needle_at_the_answer_row(script, tmp_path):
    out = tmp_path / "a.json"
    script.main([str(ROOT / "slconvert" / "assets" / "tiny-teacher"), "--task", "single", "--length", "512",
                 "--samples", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["first_token_right"] == [True]
        assert row["needles_at"][0] < row["answers_at"][0] <= 512
        first, second = (layer[0][0] for layer in row["mass"])  # [layer][value][needle]
        # 7 of ~500 keys: a row that ignored the needle would hold about 0.014 there. The second attention layer
        # is not the one that retrieves: it holds a small part of that (0.002-0.13 over the first four samples)
        assert first > 0.3 and 0.0 <= second < first / 3


def test_the_best_spans_hold_the_needle_the_router_need_not(script, tmp_path):
    """Converted in memory at the study's balanced shape: at the answer row of the retrieving layer (1) the best 3
    spans contain the needle and hold most of the dense mass; the router's spans hold no more than those here,
    and every choice holds at least the window's share."""
    out = tmp_path / "spans.json"
    script.main([str(ROOT / "slconvert" / "assets" / "tiny-teacher"), "--task", "single", "--length", "512",
                 "--samples", "2", "--shape", "balanced", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["window"] == 15 and data["search_key"] == "span_mean" and len(data["rows"]) == 2
    for row in data["rows"]:
        assert set(row["layers"]) == {"1", "3"}
        for choice in row["layers"].values():
            for router, best, window in zip(choice["router"]["recall"], choice["best"]["recall"], choice["window_mass"]):
                assert window - 1e-3 <= router <= best + 1e-3 <= 1.0 + 2e-3
        retrieving = row["layers"]["1"]["best"]
        assert retrieving["needles"] == [1.0] and retrieving["recall"][0] > 0.5
    assert set(data["summary"]) == {"1", "3"} and (out.with_suffix(".png")).stat().st_size > 5_000


def test_a_converted_checkpoint_is_measured_with_its_own_router(script, tmp_path):
    """The shipped GPU-trained conversion of the tiny teacher: its own config and router are used (not a new
    conversion), and the best spans of its retrieving layer hold the needle; --shape is refused for it in one
    line."""
    from slconvert.assets import TINY_CONVERTED
    from slconvert.loading import read_block

    out = tmp_path / "trained.json"
    script.main([str(TINY_CONVERTED), "--task", "single", "--length", "512", "--samples", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    block = read_block(TINY_CONVERTED)
    assert data["shape"] == "as converted" and data["window"] == block["window"]
    assert data["search_key"] == block["params"].get("search_key", "anchor")
    for row in data["rows"]:
        best = row["layers"]["1"]["best"]
        assert best["needles"][0] >= 0.5 and best["recall"][0] > 0.9
    with pytest.raises(SystemExit, match="is already converted; leave out --shape"):
        script.main([str(TINY_CONVERTED), "--shape", "balanced", "--out", str(tmp_path / "x.json")])


def test_a_folder_that_is_not_a_model_is_one_line(script, tmp_path):
    with pytest.raises(SystemExit, match="cannot load .* as a transformers checkpoint"):
        script.main([str(tmp_path), "--out", str(tmp_path / "a.json")])
