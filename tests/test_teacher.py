"""The tiny teacher: dense training mode (model_kind: dense), its recipe, and the shipped checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from slconvert.assets import TINY_TEACHER
from slconvert.assets.teacher import build_untrained_teacher
from slconvert.cli import main
from slconvert.errors import SlconvertError
from slconvert.tiny import build_tiny_model
from slconvert.training import load_recipe, train
from slconvert.training.recipe import recipe_from_dict

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny-teacher.yaml"
# A few steps of the real recipe on a tiny random model: short stages, small batch.
QUICK = ["max_steps=4", "curriculum=[{seq_len: 128, steps: 2}, {seq_len: 160, steps: 2}]", "batch_size=2",
         "micro_batch_size=2", "log_every=1"]


def test_teacher_recipe_trains_every_parameter_of_a_plain_checkpoint(tmp_path):
    source = build_untrained_teacher(tmp_path / "init")  # the real starting point of the shipped teacher
    recipe = load_recipe(RECIPE, QUICK)
    assert recipe.model_kind == "dense" and recipe.trainable == "all"
    summary = train(recipe, source, tmp_path / "run", progress=False)
    before, after = load_file(source / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    # Every tensor but the experts that no token reached in four steps moved.
    assert len(changed) >= 0.8 * len(before), sorted(set(before) - set(changed))
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(source)
    assert summary["trainable_parameters"] == sum(p.numel() for p in initial.parameters())  # all of them
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["seq_len"] for m in metrics] == [128, 128, 160, 160]
    assert all(m["lm"] > 0 for m in metrics)
    # The answer loss of needle samples and the loss of text samples are logged apart; with one micro-batch per
    # step (as here) the token average lies between them.
    assert all("lm_niah" in m or "lm_text" in m for m in metrics)
    for m in (m for m in metrics if "lm_niah" in m and "lm_text" in m):
        assert min(m["lm_niah"], m["lm_text"]) - 1e-4 <= m["lm"] <= max(m["lm_niah"], m["lm_text"]) + 1e-4
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "superlinear" not in config  # still a plain checkpoint, loadable by transformers alone
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert torch.equal(model.lm_head.weight, after["lm_head.weight"])


@pytest.mark.parametrize("raw, message", [
    ({"model_kind": "sparse"}, "use one of converted, dense"),
    ({"model_kind": "dense", "trainable": "router", "lm_weight": 1.0}, "needs a converted model"),
    ({"model_kind": "dense", "trainable": "all", "router_kl_weight": 1.0}, "has no routers"),
    ({"model_kind": "dense", "trainable": "all", "lm_weight": 0.0, "output_mse_weight": 1.0}, "has no routers"),
])
def test_dense_mode_refuses_what_needs_routers(raw, message):
    with pytest.raises(SlconvertError, match=message):
        recipe_from_dict(raw)


def test_model_kind_must_match_the_checkpoint(tmp_path):
    plain = build_tiny_model("nemotron_h", tmp_path / "plain", layers="MAEA")
    runner = CliRunner()
    result = runner.invoke(main, ["train", "recipes/router-warmup.yaml", "--model", str(plain),
                                  "--output", str(tmp_path / "a")])
    assert result.exit_code == 2 and "model_kind: dense" in result.output
    from cli_helpers import convert_cli

    converted = convert_cli(plain, tmp_path / "converted")
    result = runner.invoke(main, ["train", str(RECIPE), "--model", str(converted), "--output", str(tmp_path / "b")])
    assert result.exit_code == 2 and "model_kind: converted" in result.output


def test_shipped_teacher_is_small_and_answers_a_needle_prompt():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slconvert.evaluation.haystack import SyntheticHaystack
    from slconvert.evaluation.niah import build_sample, score_generation

    files = [p for p in TINY_TEACHER.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "training.jsonl",
                 "README.md"):
        assert (TINY_TEACHER / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(TINY_TEACHER)
    model = AutoModelForCausalLM.from_pretrained(TINY_TEACHER).eval()
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000
    kinds = model.config.layers_block_type
    assert kinds.count("full_attention") >= 2 and "moe" in kinds and "linear_attention" in kinds  # Mamba-2
    # A prompt the teacher never saw in training (evaluation seed), needle in the middle of 256 tokens.
    sample = build_sample(tokenizer, SyntheticHaystack(123), "single", 256, 50, seed=123)
    ids = torch.tensor([sample.input_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert score_generation(text, sample.expected) == 1.0, (text, sample.expected)
