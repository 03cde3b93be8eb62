"""`slconvert inspect`: layer map, attention shape, KV-cache size, window and attended keys, text and JSON."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from slconvert.checkpoint import directory_digest
from slconvert.cli import main
from slconvert.tiny import TINY_ARCHITECTURES, build_tiny_model

# Each tiny architecture's rotary embedding as its attention layers apply it (every one listed: a new architecture
# must add its line).
EXPECTED_ROPE = {"nemotron_h": "none", "jamba": "none", "granitemoehybrid": "none", "qwen3_next": "partial (0.25)",
                 "qwen3_5_moe_text": "partial (0.25)", "qwen3_5_text": "partial (0.25)", "bamba": "partial (0.5)",
                 "falcon_h1": "full", "lfm2": "full", "lfm2_moe": "full", "minimax": "full", "olmo_hybrid": "full"}


def _inspect(*args: str) -> str:
    result = CliRunner().invoke(main, ["inspect", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture(scope="module")
def nemotron(tmp_path_factory):
    return build_tiny_model("nemotron_h", tmp_path_factory.mktemp("inspect") / "nemotron_h")


def test_json_report_of_nemotron_h(nemotron):
    digest = directory_digest(nemotron)
    report = json.loads(_inspect(str(nemotron), "--json", "--sw-index", "3", "--search-power", "0.5"))
    assert report["model_type"] == "nemotron_h"
    assert [(row["index"], row["kind"]) for row in report["layers"]] == [
        (0, "mamba2"), (1, "full_attention"), (2, "moe"), (3, "full_attention")
    ]
    assert all(row["parameters"] > 0 for row in report["layers"])
    assert report["parameters"] > sum(row["parameters"] for row in report["layers"])  # + embeddings, head
    assert report["attention"] == {**report["attention"], "heads_q": 4, "heads_kv": 2, "head_dim": 16, "rope": "none"}
    assert report["attention_layers"] == [1, 3] and report["converted_layers"] == [1, 3]
    # K and V, 2 KV heads of 16, float32, 2 layers, 2^20 tokens.
    assert report["kv_cache"]["bytes_per_1M_tokens"] == 2 * 2 * 16 * 4 * 2 * 2**20
    assert report["router_parameters"] == 2 * 4 * 16 * 16
    sl = report["superlinear"]
    assert sl["window"] == 15
    for label, t in (("128K", 131072), ("1M", 1048576)):
        row = sl["attended_keys_per_query"][label]
        anchors = sum(1 for i in range(4, 2000) if i * i <= t)  # o(i) = i^2 for p = 1/2, from i = sw + 1 = 4
        span = math.ceil(3.0 * t**0.55) + math.ceil(1.0 * t**0.55) + 1  # released span factors, rho 0.55
        assert row["dense"] == t and row["anchors"] == anchors
        assert row["superlinear"] == 15 + 3 * span
    assert directory_digest(nemotron) == digest


def test_text_report_and_layer_choice(nemotron):
    text = _inspect(str(nemotron), "--keep-dense", "3")
    assert "H_q=4 H_kv=2 D=16 RoPE=none" in text
    assert "converted layers: [1]  kept dense: [3]" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line[:5].strip().isdigit()}
    assert lines["1"].rstrip().endswith("superlinear") and lines["3"].rstrip().endswith("dense (kept)")
    assert "mamba2" in lines["0"] and "moe" in lines["2"]
    released_window = math.floor(66 ** (1 / 0.55)) - 1  # W = o(sw + 1) - 1 for the released setting
    assert "per 1M tokens" in text and f"window W={released_window}" in text
    assert "at 128K" in text and "at   1M" in text


@pytest.mark.parametrize("model_type", TINY_ARCHITECTURES)
def test_every_architecture_has_attention_layers_and_shape(model_type, tmp_path):
    source = build_tiny_model(model_type, tmp_path / model_type)
    report = json.loads(_inspect(str(source), "--json"))
    attention = [row["index"] for row in report["layers"] if row["attention"]]
    assert attention == report["converted_layers"] and len(attention) == 2
    assert report["attention"]["heads_q"] == 4 and report["attention"]["heads_kv"] == 2
    assert report["attention"]["head_dim"] == 16
    assert report["attention"]["rope"] == EXPECTED_ROPE[model_type]


def test_inspect_of_a_converted_checkpoint_shows_its_conversion(nemotron, tmp_path):
    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert", str(nemotron), str(out), "--sw-index", "3", "--search-power", "0.5",
                                       "--keep-dense", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(_inspect(str(out), "--json"))
    assert report["existing_conversion"]["layers"] == [1] and report["existing_conversion"]["window"] == 15
    assert "already converted (slconvert" in _inspect(str(out))
    assert json.loads(_inspect(str(nemotron), "--json"))["existing_conversion"] is None


def test_inspect_refuses_a_block_naming_layers_the_model_lacks(nemotron, tmp_path):
    """It used to show them as converted layers; only loading found the block wrong."""
    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert", str(nemotron), str(out), "--sw-index", "3", "--search-power", "0.5",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    config["superlinear"]["layers"] = [1, 7]
    (out / "config.json").write_text(json.dumps(config))
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(main, ["inspect", str(out), *extra])
        assert result.exit_code == 2 and result.stdout == "", (result.output, result.exception)
        assert result.stderr.strip().splitlines() == [
            f"error: {out / 'config.json'}: 'superlinear.layers' is [1, 7]: layer 7 is out of range; the model has "
            "layers 0..3; re-make the checkpoint with `slconvert convert`"]


def test_rope_description_of_a_rotary_factor_of_one_is_full():
    """`inspect`'s rope field: 'full' when every dimension rotates (a partial_rotary_factor of 1, at the top level or
    in rope_parameters), 'partial (f)' below that."""
    from types import SimpleNamespace

    from slconvert.architectures import ARCHITECTURES, rope_description

    bamba = ARCHITECTURES["bamba"]
    assert rope_description(bamba, SimpleNamespace(partial_rotary_factor=1.0)) == "full"
    assert rope_description(bamba, SimpleNamespace(rope_parameters={"partial_rotary_factor": 1.0})) == "full"
    assert rope_description(bamba, SimpleNamespace(partial_rotary_factor=0.5)) == "partial (0.5)"


def test_sizes_use_binary_units_and_counts_decimal_ones():
    """Byte sizes step at 1024 (KiB, MiB, GiB); parameter counts at 1000 (K, M, B), the count itself below that."""
    from slconvert.commands.inspect import _bytes, _count

    assert [_bytes(n) for n in (1023, 1024, 1536, 512 * 2**20, 5 * 2**30)] == [
        "1023 B", "1.0 KiB", "1.5 KiB", "512.0 MiB", "5.0 GiB"]
    assert [_count(n) for n in (None, 999, 1000, 1024, 2_500_000, 7_000_000_000)] == [
        "-", "999", "1.00K", "1.02K", "2.50M", "7.00B"]


def test_kv_cache_counts_every_attention_layer_and_defaults_to_bfloat16(nemotron, tmp_path):
    """Superlinear attention keeps every key and value, so a layer kept dense holds as much cache as a converted
    one: K and V, 2 KV heads of 16, float32 (4 bytes), 2 layers = 512 B per token, 512 MiB per 2^20 tokens. A config
    that names no dtype is counted as bfloat16 (2 bytes): 256 B per token."""
    text = _inspect(str(nemotron), "--keep-dense", "3")
    assert "KV cache (float32): 512.0 MiB per 1M tokens (512 B per token, 2 attention layers)" in text
    bare = tmp_path / "no_dtype"
    bare.mkdir()
    for path in nemotron.iterdir():
        (bare / path.name).write_bytes(path.read_bytes())
    config = json.loads((bare / "config.json").read_text())
    for key in ("torch_dtype", "dtype"):
        config.pop(key, None)
    (bare / "config.json").write_text(json.dumps(config))
    report = json.loads(_inspect(str(bare), "--json"))
    assert report["kv_cache"]["dtype"] == "bfloat16" and report["kv_cache"]["bytes_per_token"] == 256
