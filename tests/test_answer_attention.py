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
        # 7 of ~500 keys: a row that ignored the needle would hold about 0.014 there
        assert first > 0.3 and 0.0 <= second <= 1.0


def test_a_folder_that_is_not_a_model_is_one_line(script, tmp_path):
    with pytest.raises(SystemExit, match="cannot load .* as a transformers checkpoint"):
        script.main([str(tmp_path), "--out", str(tmp_path / "a.json")])
