"""The tiny teacher: dense training mode (model_kind: dense), its recipe, and the shipped checkpoint."""

from __future__ import annotations

import json
import re
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


def test_teacher_config_has_the_documented_shape_and_refuses_an_unknown_size():
    """The tiny teacher: hidden 256, layers M A E A, vocab 1024, 8 query heads of 32 over 2 key/value heads, 8 experts
    (2 per token) of 256; the study teacher: hidden 512, 15 layers, heads of 64. A size that is not a key of
    TEACHER_SIZES is a ValueError naming the sizes."""
    from slconvert.assets.teacher import teacher_config

    tiny = teacher_config()
    assert (tiny.hidden_size, tiny.vocab_size, tiny.num_hidden_layers) == (256, 1024, 4)
    assert (tiny.num_attention_heads, tiny.num_key_value_heads, tiny.head_dim) == (8, 2, 32)
    assert (tiny.n_routed_experts, tiny.num_experts_per_tok, tiny.moe_intermediate_size) == (8, 2, 256)
    assert tiny.moe_shared_expert_intermediate_size == 256 and tiny.max_position_embeddings == 8192
    study = teacher_config("study")
    assert (study.hidden_size, study.num_hidden_layers, study.head_dim) == (512, 15, 64)
    assert study.max_position_embeddings == 32768
    with pytest.raises(ValueError, match="unknown teacher size 'huge'; use one of tiny, study"):
        teacher_config("huge")


def test_teacher_command_writes_into_a_new_or_empty_folder_only(tmp_path, monkeypatch, capsys):
    """OUT_DIR defaults to SIZE-teacher-init; a folder with files in it, or a file, is refused before anything is
    built; an empty folder is used. (The build itself is replaced by one that records its arguments.)"""
    from slconvert.assets import teacher

    built = []
    monkeypatch.setattr(teacher, "build_untrained_teacher",
                        lambda out, seed, size: built.append((str(out), seed, size)) or out)
    monkeypatch.chdir(tmp_path)
    teacher.main(["--size", "study", "--seed", "3"])
    assert built == [("study-teacher-init", 3, "study")]
    assert "untrained study teacher written to study-teacher-init" in capsys.readouterr().out
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    for name in ("full", "file"):
        with pytest.raises(SystemExit, match=f"error: {name} exists and is not an empty folder"):
            teacher.main([name])
    (tmp_path / "empty").mkdir()
    teacher.main(["empty"])
    assert built[1:] == [("empty", 0, "tiny")]


def test_untrained_teacher_weights_come_from_its_seed(tmp_path, monkeypatch):
    """--seed is the seed of the weights: the model is initialized right after torch.manual_seed(seed), so seed 5
    gives the weights of a model built after torch.manual_seed(5), and not those of seed 6. (The tokenizer is
    not built here.)"""
    from transformers import AutoModelForCausalLM

    from slconvert.assets import teacher

    monkeypatch.setattr(teacher, "build_teacher_tokenizer", lambda out, seed: None)
    out = teacher.build_untrained_teacher(tmp_path / "t", seed=5)
    written = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight
    for seed, same in ((5, True), (6, False)):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(teacher.teacher_config(), dtype=torch.float32)
        assert torch.equal(written, model.get_input_embeddings().weight) == same, seed


def test_tokenizer_corpus_pairs_each_kind_of_value_with_keys_of_the_other_kind():
    """The needle prompts the tokenizer is trained on ask for number values by word keys ("adjective-noun") and for
    word values by number keys, 50 of each per template, so both kinds of key are in its corpus."""
    from slconvert.assets.teacher import _tokenizer_corpus

    found = {"numbers": set(), "words": set()}
    for text in _tokenizer_corpus(0):
        for plural, key in re.findall(r"special magic (numbers|words) for (\S+) is: ", text):
            found[plural].add("number" if key.isdigit() else "word" if re.fullmatch(r"[a-z]+-[a-z]+", key) else key)
    assert found == {"numbers": {"word"}, "words": {"number"}}
