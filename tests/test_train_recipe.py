"""Recipe schema: shipped recipes load and document every key, overrides, refusals, the lr schedule."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from slconvert.errors import SlconvertError
from slconvert.training.loop import make_scheduler
from slconvert.training.recipe import DataSpec, LoraSpec, Recipe, load_recipe, parse_overrides, recipe_from_dict

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = ["router-warmup.yaml", "niah-curriculum.yaml", "long-context.yaml", "demo-curriculum.yaml", "tiny-teacher.yaml",
           "study-teacher.yaml",
           "conversion-study.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads_and_documents_every_key(name):
    path = RECIPES / name
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    text = path.read_text()
    for key in [f.name for f in fields(Recipe)] + [f.name for f in fields(DataSpec)] + [f.name for f in fields(LoraSpec)]:
        line = re.search(rf"^\s*{key}:.*$", text, flags=re.M)
        assert line, f"{name} does not set {key}"
        # documented: a comment on the line itself or on the continuation lines right after it
        following = text[line.end():].split("\n")[1:3]
        assert "#" in line.group(0) or any(s.strip().startswith(("#", "- {")) for s in following), key


def test_shipped_recipes_differ_in_purpose():
    warm = load_recipe(RECIPES / "router-warmup.yaml")
    niah = load_recipe(RECIPES / "niah-curriculum.yaml")
    long = load_recipe(RECIPES / "long-context.yaml")
    assert warm.trainable == "router" and warm.lm_weight == 0 and warm.router_kl_weight > 0
    assert niah.data.niah_fraction > 0 and [s.seq_len for s in niah.stages()] == [4096, 16384, 32768]
    # the conversion study's staged schedule: three quarters of the steps at 4K, every stage at the same tokens
    assert niah.stages()[0].steps * 4 == niah.max_steps * 3
    assert {s.seq_len * niah.batch_of(s) for s in niah.stages()} == {131072}
    assert long.lm_weight > 0 and long.data.niah_fraction == 0


def test_unknown_keys_are_refused_with_the_valid_list():
    with pytest.raises(SlconvertError, match=r"unknown recipe key\(s\) learning_rate; valid keys are: .*lr.*max_steps"):
        recipe_from_dict({"learning_rate": 1.0})
    with pytest.raises(SlconvertError, match=r"data\.paths; valid data keys are: .*niah_fraction.*text"):
        recipe_from_dict({"data": {"paths": ["x"]}})


def test_overrides_parse_types_and_nesting(tmp_path):
    parsed = parse_overrides(["lr=1e-4", "max_steps=7", "data.text=[a.txt, b]", "trainable=[\"*.q_proj.*\"]",
                              "curriculum=[{seq_len: 64, steps: 2}, {seq_len: 128, steps: 3}]"])
    assert parsed["lr"] == 1e-4 and parsed["max_steps"] == 7
    assert parsed["data"] == {"text": ["a.txt", "b"]}
    recipe = recipe_from_dict(parsed)
    assert recipe.trainable == ["*.q_proj.*"]
    assert [recipe.seq_len_at(s) for s in range(7)] == [64, 64, 128, 128, 128, 128, 128]
    path = tmp_path / "r.yaml"
    path.write_text("max_steps: 3\nlr: 2.0e-3\ndata:\n  niah_fraction: 0.0\n")
    recipe = load_recipe(path, ["data.jsonl_field=body", "lr=5e-4"])
    assert recipe.lr == 5e-4 and recipe.data.jsonl_field == "body" and recipe.max_steps == 3
    for bad in (["lr"], ["=3"], ["a.b.c=1"], ["model.x=1"]):
        with pytest.raises(SlconvertError):
            parse_overrides(bad)


@pytest.mark.parametrize("raw, message", [
    ({"lr": -1}, "lr=-1"),
    ({"lr": "fast"}, "lr='fast'"),
    ({"max_steps": 0}, "max_steps=0"),
    ({"trainable": []}, "trainable"),
    ({"precision": "fp8"}, "precision='fp8'"),
    ({"data": {"niah_tasks": ["haystack"]}}, "data.niah_tasks"),
    ({"data": {"niah_haystack": "text"}}, "needs data.text"),
    ({"batch_size": 3, "micro_batch_size": 2}, "not a multiple"),
    ({"lm_weight": 0, "router_kl_weight": 0}, "all loss weights are 0"),
    ({"curriculum": [{"seq_len": 64}]}, "curriculum"),
    ({"curriculum": [{"seq_len": 64, "steps": 2, "tasks": ["single"]}]}, "optional niah_tasks"),
    ({"curriculum": [{"seq_len": 64, "steps": 2, "niah_tasks": ["haystack"]}]}, "curriculum[0].niah_tasks"),
    ({"curriculum": [{"seq_len": 64, "steps": 2, "niah_tasks": []}]}, "curriculum[0].niah_tasks"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing"),
    ({"distill_weight": -1}, "distill_weight=-1"),
    ({"distill_weight": 1, "distill_temperature": 0}, "distill_temperature=0"),
    ({"distill_weight": 1, "distill_teacher": ""}, "distill_teacher=''"),
    ({"model_kind": "dense", "trainable": "all", "distill_weight": 1}, "model_kind=dense has none"),
    ({"lm_weight": 0, "router_kl_weight": 0, "distill_weight": 0}, "all loss weights are 0"),
    # every range the recipe files document, each one step past its edge
    ({"max_steps": 2.5}, "max_steps=2.5"),
    ({"log_every": 0}, "log_every=0"),
    ({"keep_checkpoints": -1}, "keep_checkpoints=-1"),
    ({"time_limit_minutes": -1}, "time_limit_minutes=-1"),
    ({"min_lr_ratio": 1.5}, "min_lr_ratio=1.5"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"max_grad_norm": -1}, "max_grad_norm=-1"),
    ({"data": {"niah_fraction": 1.5}}, "data.niah_fraction=1.5"),
    ({"data": {"jsonl_field": ""}}, "data.jsonl_field=''"),
    ({"lora": {"rank": 0}}, "lora.rank=0"),
    ({"lora": {"alpha": 0}}, "lora.alpha=0"),
    ({"lora": {"dropout": 1.5}}, "lora.dropout=1.5"),
    ({"curriculum": [{"seq_len": 1, "steps": 2}]}, "curriculum[0].seq_len=1"),
    ({"curriculum": [{"seq_len": 64, "steps": 0}]}, "curriculum[0].steps=0"),
    # the output MSE is a router loss like the KL: it needs query rows and routers, and LoRA trains without it
    ({"output_mse_weight": 1, "router_rows": 0}, "router_rows=0"),
    ({"model_kind": "dense", "trainable": "all", "output_mse_weight": 1}, "model_kind=dense has no routers"),
    ({"model_kind": "dense"}, "trainable=router needs a converted model"),
    ({"trainable": "lora", "output_mse_weight": 1}, "trainable=lora trains through the next-token loss"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(SlconvertError, match=re.escape(message)):
        recipe_from_dict(raw)


def test_values_on_the_edge_of_a_range_are_accepted():
    """Each bound is inclusive where the recipe files say so: stop_at_step may be max_steps (the whole schedule), and
    any one loss weight > 0 is enough, the output MSE alone or distillation alone on a dense model."""
    assert recipe_from_dict({"max_steps": 4, "stop_at_step": 4}).stop_at_step == 4
    assert recipe_from_dict({"lm_weight": 0, "output_mse_weight": 0.5}).output_mse_weight == 0.5
    dense = recipe_from_dict({"model_kind": "dense", "trainable": "all", "lm_weight": 0, "distill_weight": 1,
                              "distill_teacher": "teacher/"})
    assert dense.distill_weight == 1.0 and dense.through_logits


def test_overrides_of_one_section_add_up_and_values_keep_their_own_equals_signs(tmp_path):
    """Two data.* overrides set both keys; an override of one data key keeps the file's other data keys; a value
    may hold "=" (a path); spaces around a key are dropped (`--train "a=1; b=2"` of scripts/conversion_study.py);
    an empty value is the empty string, which data.text refuses (it would read the current folder)."""
    assert parse_overrides(["data.text=[a.txt]", "data.niah_fraction=0.5"]) == {
        "data": {"text": ["a.txt"], "niah_fraction": 0.5}}
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  niah_fraction: 0.25\n  niah_tasks: [multikey]\n")
    recipe = load_recipe(path, ["data.jsonl_field=body"])
    assert recipe.data.niah_fraction == 0.25 and recipe.data.niah_tasks == ["multikey"]
    assert recipe.data.jsonl_field == "body"
    assert parse_overrides(["distill_teacher=runs/lr=3e-4"]) == {"distill_teacher": "runs/lr=3e-4"}
    assert parse_overrides([" lr =1e-4", " data.text =[a]"]) == {"lr": 1e-4, "data": {"text": ["a"]}}
    assert parse_overrides(["data.text="]) == {"data": {"text": ""}}
    with pytest.raises(SlconvertError, match=re.escape("data.text='' is invalid")):
        load_recipe(path, ["data.text="])


def test_missing_or_broken_recipe_file(tmp_path):
    with pytest.raises(SlconvertError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: [1,\n")
    with pytest.raises(SlconvertError, match="not valid YAML"):
        load_recipe(broken)


def _lr_factors(warmup, total, min_ratio):
    """The lr of optimizer steps 0 .. total - 1 as a fraction of the peak, from the scheduler the trainer builds."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    recipe = Recipe(warmup_steps=warmup, max_steps=total, min_lr_ratio=min_ratio)
    scheduler = make_scheduler(optimizer, recipe)
    factors = []
    for _ in range(total):
        factors.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return factors


def test_warmup_then_cosine():
    factors = _lr_factors(4, 20, 0.1)
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]  # the first step already moves the weights
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert factors[-1] == pytest.approx(0.1)  # the floor is reached at the last step
    assert factors[11] == pytest.approx(0.55)  # half-way down the cosine
    assert _lr_factors(0, 4, 0.0) == pytest.approx([0.8535534, 0.5, 0.1464466, 0.0])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_schedules_follow_the_cosine_to_the_floor(name):
    """Each shipped recipe's schedule: a linear warm-up from 1/warmup_steps of the peak, then a half-cosine that
    reaches the floor at the last step, within 0.4% of the peak of one that would reach it a step later."""
    recipe = load_recipe(RECIPES / name)
    warmup, total, floor = recipe.warmup_steps, recipe.max_steps, recipe.min_lr_ratio
    factors = _lr_factors(warmup, total, floor)
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    for step in range(warmup, total):
        before = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert abs(factors[step] - before) < 0.004, (step, factors[step], before)
    assert factors[-1] == pytest.approx(floor)


def test_falling_span_recall_is_reported_with_the_fix():
    from slconvert.commands.train import recall_warning

    fell = {"span_recall_before": {"1": 0.74, "3": 0.64}, "span_recall_after": {"1": 0.43, "3": 0.47},
            "routers_only": True}
    message = recall_warning(fell)
    assert "0.690 to 0.450" in message and "lower lr" in message and "\n" not in message
    assert recall_warning({**fell, "routers_only": False}) is None  # the dense attention moved too
    alone = {"routers_only": True}
    assert recall_warning({**alone, "span_recall_before": {"1": 0.5}, "span_recall_after": {"1": 0.6}}) is None
    assert recall_warning({**alone, "span_recall_before": {"1": 0.5}, "span_recall_after": {"1": 0.49}}) is None
    assert recall_warning({**alone, "span_recall_before": None, "span_recall_after": {"1": 0.1}}) is None  # resumed
    # a fall of exactly the tolerance is within it (0.5 - 0.25 is exact in binary)
    assert recall_warning({**alone, "span_recall_before": {"1": 0.5}, "span_recall_after": {"1": 0.25}}, 0.25) is None


def test_train_command_prints_the_last_loss_and_mean_recall_and_passes_quiet_on(tmp_path, monkeypatch):
    """The command's summary line: the last logged loss to 4 places and the mean span recall after the run
    ((0.5 + 0.25) / 2 = 0.375); --quiet turns the progress bars off. `train` is replaced by one that records its
    arguments and returns a summary."""
    from click.testing import CliRunner

    import slconvert.training
    from slconvert.cli import main

    calls = []
    summary = {"steps": 3, "last": {"loss": 1.23456}, "span_recall_after": {"1": 0.5, "3": 0.25}}
    monkeypatch.setattr(slconvert.training, "train",
                        lambda recipe, model, out, resume, progress: calls.append((resume, progress)) or summary)
    for flags, progress in (([], True), (["--quiet"], False)):
        result = CliRunner().invoke(main, ["train", str(RECIPES / "router-warmup.yaml"), "--model", str(tmp_path / "m"),
                                           "--output", str(tmp_path / "o"), *flags])
        assert result.exit_code == 0, result.output
        assert result.output == f"trained 3 steps -> {tmp_path / 'o'} (last loss 1.2346, span recall 0.375)\n"
        assert calls.pop() == (False, progress)


def test_the_default_tolerance_of_a_span_recall_fall_is_two_points():
    """Without a tolerance given, a fall of 0.03 (more than 0.02) is reported and a fall of 0.015 is not."""
    from slconvert.commands.train import recall_warning

    alone = {"routers_only": True, "span_recall_before": {"1": 0.5}}
    assert "0.500 to 0.470" in recall_warning({**alone, "span_recall_after": {"1": 0.47}})
    assert recall_warning({**alone, "span_recall_after": {"1": 0.485}}) is None
