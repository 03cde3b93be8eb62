"""End to end on tiny converted checkpoints: every recipe, resume, router warm-up, curriculum, NaN guard."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from test_train_helpers import FAST, converted, fast_model

import slconvert
from slconvert.checkpoint import directory_digest
from slconvert.cli import main
from slconvert.errors import SlconvertError
from slconvert.training import Trainer, TrainingStopped, load_recipe
from slconvert.training.checkpoints import TRAINER_FILE, latest_checkpoint
from slconvert.training.loop import progress_line
from slconvert.training.preflight import distill_path


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return load_file(path / "model.safetensors")


def _invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output  # stdout and stderr, interleaved


CASES = {
    "router-warmup.yaml": ("nemotron_h", ["max_steps=3", "seq_len=96", "batch_size=2", "save_every=2",
                                          "recall_rows=64", "router_rows=32", "output_mse_weight=0.5"]),
    "niah-curriculum.yaml": (FAST, ["max_steps=4", "curriculum=[{seq_len: 288, steps: 2}, {seq_len: 320, steps: 2}]",
                                    "data.niah_tasks=[single, passkey]", "batch_size=2", "save_every=2",
                                    "recall_rows=64", "router_rows=32", "recall_every=2",
                                    "router_kl_weight=0.1", "router_rows_from=answers"]),
    "long-context.yaml": (FAST, ["max_steps=3", "seq_len=64", "batch_size=2", "micro_batch_size=2",
                                 "save_every=0", "recall_rows=32", "router_rows=16", "precision=bf16"]),
}


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_each_recipe_runs_and_leaves_a_loadable_checkpoint(recipe, tmp_path):
    kind, overrides = CASES[recipe]
    model = tmp_path / "source"
    shutil.copytree(converted(kind, layers="MAEA" if kind == "nemotron_h" else "MAMA"), model)
    # a config.json as another writer spaced it: the trained model's config.json is this one, byte for byte
    (model / "config.json").write_text(json.dumps(json.loads((model / "config.json").read_text()), indent=4))
    # Logs and results of the source's own training must not end up in (or overwrite) this run's output.
    (model / "metrics.jsonl").write_text(json.dumps({"step": 999, "loss": 0.0}) + "\n")
    (model / "niah_eval.json").write_text("{}")
    before = directory_digest(model)
    out = tmp_path / "run"
    extra = []
    if recipe == "long-context.yaml":
        (tmp_path / "corpus").mkdir()
        (tmp_path / "corpus" / "a.txt").write_text("A long document about rivers and stones. " * 30)
        (tmp_path / "corpus" / "b.jsonl").write_text(json.dumps({"text": "Another one about clouds. " * 30}) + "\n")
        extra = [f"data.text=[{tmp_path / 'corpus'}]"]
    code, output = _invoke(["train", f"recipes/{recipe}", "--model", str(model), "--output", str(out), "--quiet",
                            *overrides, *extra])
    assert code == 0, output
    assert "Loading weights" not in output  # --quiet: no bars, transformers' none either
    assert directory_digest(model) == before  # the input checkpoint is never modified
    recipe_obj = load_recipe(out / "recipe.yaml")
    steps = [m for m in _metrics(out) if "event" not in m]
    assert [m["step"] for m in steps] == list(range(1, recipe_obj.max_steps + 1))
    assert all(m["tokens_per_s"] > 0 and torch.isfinite(torch.tensor(m["loss"])) for m in steps)
    if recipe_obj.router_kl_weight > 0:
        # a router that matched dense attention exactly would score 0; a loss left out of the sum or never computed
        # shows as 0 or NaN (the loss itself is checked against a brute force in test_train_losses)
        assert all(0 < m["kl"] < float("inf") for m in steps), [m["kl"] for m in steps]
    events = [m["when"] for m in _metrics(out) if m.get("event") == "span_recall"]
    assert events[0] == "before" and events[-1] == "after"
    assert (out / "training.png").stat().st_size > 1000
    assert not (out / "niah_eval.json").exists() and (out / "tokenizer.json").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == recipe_obj.max_steps
    assert summary["routers_only"] == (recipe == "router-warmup.yaml")

    assert (out / "config.json").read_bytes() == (model / "config.json").read_bytes()
    trained = slconvert.load(out)  # the final output directory is a converted checkpoint
    assert slconvert.router.routers(trained)
    new, old = _weights(out), _weights(model)
    assert set(new) == set(old)
    changed = {name for name in old if not torch.equal(new[name].to(old[name].dtype), old[name])}
    if recipe == "router-warmup.yaml":
        assert changed and all("superlinear_router" in name for name in changed)
    elif recipe == "niah-curriculum.yaml":  # trainable: mixers (converted attention modules + Mamba-2 mixers)
        assert any("superlinear_router" in n for n in changed) and any("q_proj" in n for n in changed)
        assert any(".mamba." in n for n in changed)
        assert not any("embed" in n or "moe" in n or "expert" in n for n in changed)
    else:  # trainable: all
        assert any("embed" in n for n in changed) and any("mamba" in n for n in changed)
    if recipe_obj.save_every:
        checkpoint = latest_checkpoint(out)
        last_save = recipe_obj.max_steps // recipe_obj.save_every * recipe_obj.save_every
        assert checkpoint.name == f"step-{last_save:06d}"
        assert (checkpoint / "state" / "optimizer.bin").is_file()
        assert (checkpoint / "config.json").read_bytes() == (model / "config.json").read_bytes()
        assert slconvert.router.routers(slconvert.load(checkpoint))


def _curriculum_recipe(**extra):
    overrides = ["max_steps=4", "curriculum=[{seq_len: 288, steps: 2}, {seq_len: 320, steps: 2}]",
                 "data.niah_tasks=[single]", "batch_size=2", "micro_batch_size=1", "save_every=2", "recall_rows=0",
                 "router_rows=32", "lr=3e-3", "gradient_checkpointing=false"]
    return load_recipe("recipes/niah-curriculum.yaml", overrides + [f"{k}={v}" for k, v in extra.items()])


def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path, capsys):
    model = fast_model()
    straight = tmp_path / "straight"
    Trainer(_curriculum_recipe(), model, straight, progress=False).run()

    interrupted = tmp_path / "interrupted"
    trainer = Trainer(_curriculum_recipe(), model, interrupted, progress=False)
    real_step = trainer._step

    def crash_at_step_3(step):
        if step == 2:
            raise RuntimeError("simulated crash")
        return real_step(step)

    trainer._step = crash_at_step_3
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    assert latest_checkpoint(interrupted).name == "step-000002"
    assert not (interrupted / "config.json").exists()  # no final model from a broken run

    # a checkpoint from before a recipe key existed resumes without calling that key changed (its default ran)
    state_file = latest_checkpoint(interrupted) / TRAINER_FILE
    state = json.loads(state_file.read_text())
    assert state["recipe"]["router_rows_from"] == "random"  # the key's default, which that older run used
    del state["recipe"]["router_rows_from"]
    state_file.write_text(json.dumps(state))
    resumed = Trainer(_curriculum_recipe(), model, interrupted, resume=True, progress=False)
    printed = capsys.readouterr()
    assert "changed recipe keys" not in printed.out + printed.err
    assert resumed.start_step == 2
    resumed.run()
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    steps = [m["step"] for m in _metrics(interrupted) if "event" not in m]
    assert steps == [1, 2, 3, 4]
    losses_a = [m["loss"] for m in _metrics(straight) if "event" not in m]
    losses_b = [m["loss"] for m in _metrics(interrupted) if "event" not in m]
    assert losses_b == pytest.approx(losses_a, abs=1e-6)


def test_a_stage_of_its_own_batch_accumulates_its_micro_batches_into_one_step(tmp_path):
    """A stage of 3 sequences in micro-batches of one gives the weights of the same stage in one pass: the optimizer
    steps once per step, after the stage's own count of micro-batches (3, after the first stage's 2 per step), each
    loss divided by it; and the stage logs its own tokens per step.

    Each step's gradient norm (logged before clipping) holds the count and the division: AdamW's update is nearly
    blind to the gradient's scale. The weights are compared by each one's whole update, within 5% in norm: AdamW's
    first steps move an element by about lr times the sign of its gradient, so an element whose gradient is near zero
    can move differently under another CPU's rounding (a fifth of a step, measured on an AMD EPYC)."""
    model = fast_model()

    def run(out, micro):
        stages = f"[{{seq_len: 288, steps: 2}}, {{seq_len: 320, steps: 2, batch_size: 3, micro_batch_size: {micro}}}]"
        Trainer(_curriculum_recipe(curriculum=stages, save_every=0), model, out, progress=False).run()
        return _weights(out), [m for m in _metrics(out) if "event" not in m]

    (accumulated, logged), (whole, logged_whole) = run(tmp_path / "micro-1", 1), run(tmp_path / "micro-3", 3)
    assert [m["tokens"] for m in logged] == [2 * 288, 2 * 288, 3 * 320, 3 * 320]
    # the gradient each optimizer step takes (its norm before clipping): AdamW's update hides its scale
    norms = [m["grad_norm"] for m in logged]
    assert norms == pytest.approx([m["grad_norm"] for m in logged_whole], rel=1e-3)
    # the logged loss is the step's, not a sum over its micro-batches (one sequence each, averaged per sample)
    assert [m["lm"] for m in logged] == pytest.approx([m["lm"] for m in logged_whole], rel=1e-3)
    start = _weights(model)
    assert [n for n in whole if not torch.equal(whole[n], start[n])]
    for name in whole:
        update, update_whole = (accumulated[name] - start[name]).double(), (whole[name] - start[name]).double()
        gap = ((update - update_whole).norm() / update_whole.norm().clamp_min(1e-30)).item()
        assert gap < 0.05, f"{name}: updates differ by {gap:.1%} of the one-pass update"


def test_max_grad_norm_clips_the_gradient_before_the_step(tmp_path):
    """A step clipped to a norm of 1e-12 barely moves the routers: AdamW's first step moves a weight by lr g / (|g| +
    eps), at most lr * 1e-12 / 1e-8 here, where an unclipped step moves it by about lr (1e-3: the cosine's floor of
    lr=1e-2 at the one step)."""
    model = converted("nemotron_h")
    out = tmp_path / "clipped"
    recipe = load_recipe("recipes/router-warmup.yaml", [
        "max_steps=1", "seq_len=96", "batch_size=1", "save_every=0", "recall_rows=0", "router_rows=32",
        "warmup_steps=0", "lr=1e-2", "max_grad_norm=1e-12"])
    Trainer(recipe, model, out, progress=False).run()
    (logged,) = [m for m in _metrics(out) if "event" not in m]
    assert logged["grad_norm"] > 1e-9  # the norm is logged before clipping: there was something to clip
    start, end = _weights(model), _weights(out)
    moved = max(float((end[n].float() - start[n].float()).abs().max()) for n in end)
    assert moved < 1e-6, moved


def test_stop_at_step_ends_on_the_long_schedule_and_resumes_into_the_straight_run(tmp_path):
    """`stop_at_step` ends the run after that step with max_steps' learning rates (a shorter piece of the longer
    schedule, as a time limit would), writes the checkpoint `--resume` continues from even between `save_every`
    steps, and the resumed run ends where a straight one does; resuming at or past the stop is refused."""
    model = fast_model()
    straight = tmp_path / "straight"
    Trainer(_curriculum_recipe(save_every=0), model, straight, progress=False).run()

    piece = tmp_path / "piece"
    summary = Trainer(_curriculum_recipe(save_every=2, stop_at_step=3), model, piece, progress=False).run()
    assert summary["steps"] == 3 and summary["stopped_at_step"] and not summary["stopped_at_time_limit"]
    assert latest_checkpoint(piece).name == "step-000003" and (piece / "config.json").exists()
    lrs = [m["lr"] for m in _metrics(piece) if "event" not in m]
    assert lrs == pytest.approx([m["lr"] for m in _metrics(straight) if "event" not in m][:3])
    with pytest.raises(SlconvertError, match="at or past stop_at_step=3"):
        Trainer(_curriculum_recipe(save_every=2, stop_at_step=3), model, piece, resume=True, progress=False)
    Trainer(_curriculum_recipe(save_every=2), model, piece, resume=True, progress=False).run()
    a, b = _weights(straight), _weights(piece)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    with pytest.raises(SlconvertError, match="past max_steps"):
        _curriculum_recipe(stop_at_step=5)


def test_router_warmup_raises_span_recall_on_peaked_attention(tmp_path):
    # Dense attention peaked on earlier occurrences of the current token (query = 100 x key projection),
    # text made of runs of repeated words, routers initialized at random: the warm-up has to learn to
    # point the spans at the matching runs.
    model = fast_model(peaked=100.0, router_init="random")
    words = "apple river stone cloud tiger lamp ocean pepper violet castle mirror wagon".split()
    rng = random.Random(0)
    (tmp_path / "runs.txt").write_text(" ".join(w for _ in range(600) for w in [rng.choice(words)] * 8))
    recipe = load_recipe("recipes/router-warmup.yaml", [
        "max_steps=16", "seq_len=192", "batch_size=2", "save_every=0", "lr=3e-2", "warmup_steps=2",
        "router_rows=96", "recall_rows=512", "recall_every=8", f"data.text=[{tmp_path / 'runs.txt'}]"])
    summary = Trainer(recipe, model, tmp_path / "run", progress=False).run()
    before, after = summary["span_recall_before"], summary["span_recall_after"]
    assert set(before) == set(after) == {"1", "3"}
    for layer in before:
        assert after[layer] > before[layer] + 0.04, (before, after)
    kl = [m["kl"] for m in _metrics(tmp_path / "run") if "kl" in m]
    assert sum(kl[-4:]) / 4 < 0.7 * sum(kl[:4]) / 4
    assert [m["when"] for m in _metrics(tmp_path / "run") if m.get("event")] == ["before", "during", "after"]


def test_curriculum_loss_decreases(tmp_path):
    recipe = load_recipe("recipes/niah-curriculum.yaml", [
        "max_steps=50", "curriculum=[{seq_len: 384, steps: 25}, {seq_len: 448, steps: 25}]",
        "data.niah_tasks=[single, multikey]", "data.niah_haystack=noise", "batch_size=1", "save_every=0",
        "recall_rows=0", "router_rows=16", "lr=3e-3", "warmup_steps=5", "trainable=all",
        "gradient_checkpointing=false"])
    Trainer(recipe, fast_model(), tmp_path / "run", progress=False).run()
    steps = [m for m in _metrics(tmp_path / "run") if "event" not in m]
    assert [m["seq_len"] for m in steps] == [384] * 25 + [448] * 25
    first, last = [m["lm"] for m in steps[:10]], [m["lm"] for m in steps[-10:]]
    assert sum(last) / 10 < sum(first) / 10 - 0.5, (first, last)


def test_distillation_alone_moves_the_model_toward_its_teacher(tmp_path):
    """lm_weight 0, distill_weight 1, text only: the loss is KL(teacher || converted model) at every token. The
    teacher here is the source with its final norm scaled by 4 (its next-token distributions sharper, the model's
    flatter): the first logged value is the KL computed from the two models directly, and training brings the
    model most of the way to the teacher."""
    from safetensors.torch import save_file

    from slconvert.training.losses import average_loss, distill_sums
    from slconvert.training.model_setup import load_dense

    model = fast_model()
    teacher = tmp_path / "teacher"
    shutil.copytree(json.loads((model / "config.json").read_text())["superlinear"]["source"]["path"], teacher)
    weights = _weights(teacher)
    weights["model.norm.weight"] = weights["model.norm.weight"] * 4
    save_file(weights, teacher / "model.safetensors", metadata={"format": "pt"})
    recipe = load_recipe("recipes/conversion-study.yaml", [
        "max_steps=48", "seq_len=160", "batch_size=2", "micro_batch_size=2", "lm_weight=0", "distill_weight=1",
        f"distill_teacher={teacher}", "data.niah_fraction=0", "trainable=all", "lr=3e-3", "warmup_steps=2",
        "log_every=1", "precision=fp32"])
    out = tmp_path / "run"
    trainer = Trainer(recipe, model, out, progress=False)
    ((_, samples),) = trainer.source.micro_batches(0, 0, 1)
    ids, labels, _ = trainer._tensors(samples)
    with torch.no_grad():
        first = average_loss(*distill_sums(trainer.unwrapped(input_ids=ids).logits,
                                           load_dense(teacher)(input_ids=ids).logits, labels), recipe.lm_average)
    trainer.run()
    distill = [m["distill"] for m in _metrics(out) if "event" not in m]
    assert distill[0] == pytest.approx(float(first), rel=1e-4) and distill[0] > 0.05, distill
    assert sum(distill[-4:]) / 4 < 0.4 * distill[0], distill  # measured 0.24


def test_a_distillation_teacher_that_is_not_there_is_one_line(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(fast_model(), model)
    config = json.loads((model / "config.json").read_text())
    config["superlinear"]["source"]["path"] = str(tmp_path / "moved")
    (model / "config.json").write_text(json.dumps(config))
    code, output = _invoke(["train", "recipes/conversion-study.yaml", "--model", str(model), "--output",
                            str(tmp_path / "run"), "--quiet", "distill_weight=1", "seq_len=64", "batch_size=1", "data.niah_fraction=0",
                            "micro_batch_size=1"])
    assert code == 2 and output.strip().startswith("error:") and len(output.strip().splitlines()) == 1, output
    assert "moved (the source recorded in" in output and "distill_teacher" in output
    recipe = load_recipe("recipes/conversion-study.yaml", ["distill_weight=1"])
    source = json.loads((fast_model() / "config.json").read_text())["superlinear"]["source"]["path"]
    assert distill_path(recipe, fast_model()) == Path(source)  # distill_teacher=source: the conversion's record
    for record in (None, "x", {}, {"path": 5}, {"path": ""}):  # a record without a path: never the current folder
        config["superlinear"]["source"] = record
        (model / "config.json").write_text(json.dumps(config))
        with pytest.raises(SlconvertError, match=r"records no source path \(superlinear.source.path\); set "
                                                 "distill_teacher"):
            distill_path(recipe, model)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_values_stop_the_run_and_keep_the_last_checkpoint(where, tmp_path):
    recipe = load_recipe("recipes/long-context.yaml", [
        "max_steps=6", "seq_len=64", "batch_size=1", "save_every=2", "recall_rows=0", "router_rows=16",
        "gradient_checkpointing=false"])
    out = tmp_path / "run"
    trainer = Trainer(recipe, fast_model(), out, progress=False)
    calls = {"step": 0}
    step = trainer._step

    def counted(index):
        calls["step"] = index + 1
        return step(index)

    trainer._step = counted
    head = trainer.unwrapped.get_output_embeddings()

    def poison(module, args, output):
        if calls["step"] >= 4 and where == "loss":
            return output * float("nan")
        return output

    head.register_forward_hook(poison)
    if where == "gradient":
        head.weight.register_hook(lambda grad: grad * float("inf") if calls["step"] >= 4 else grad)
    with pytest.raises(TrainingStopped, match=rf"non-finite {where}.* at step 4: .*step-000002"):
        trainer.run()
    assert latest_checkpoint(out).name == "step-000002"
    assert not (out / "checkpoints" / "step-000004").exists()
    assert not (out / "config.json").exists()
    assert _metrics(out)[-1] == {"event": "stopped", "step": 4, "reason": _metrics(out)[-1]["reason"]}
    kept = slconvert.load(latest_checkpoint(out))  # written before the poisoned step: loads, and every weight finite
    assert all(torch.isfinite(p).all() for p in kept.parameters())


def test_bad_input_is_one_line_before_any_work(tmp_path):
    model = fast_model()
    source = model.parent / model.name.replace("conv-", "src-")
    recipe = "recipes/router-warmup.yaml"
    out = tmp_path / "run"
    cases = [
        (["train", recipe, "--model", str(model), "--output", str(out), "learning_rate=1"], "unknown recipe key"),
        (["train", "recipes/none.yaml", "--model", str(model), "--output", str(out)], "does not exist"),
        (["train", recipe, "--model", str(source), "--output", str(out)], "is not converted"),
        (["train", recipe, "--model", str(model), "--output", str(out), f"data.text=[{tmp_path / 'gone'}]"],
         "does not exist"),
        (["train", recipe, "--model", str(model), "--output", str(out), "--resume"], "no checkpoint to resume"),
        (["train", recipe, "--model", str(model), "--output", str(model / "inside")], "lies inside"),
        (["train", recipe, "--model", str(model), "--output", str(out), "seq_len=16"], "never leaves the attention"),
    ]
    for args, message in cases:
        code, output = _invoke(args)
        assert code == 2 and message in output, (args, output)
        assert output.strip().startswith("error:") and len(output.strip().splitlines()) == 1
        assert not out.exists()
    out.mkdir()
    (out / "something").write_text("x")
    code, output = _invoke(["train", recipe, "--model", str(model), "--output", str(out)])
    assert code == 2 and "already exists" in output


def _short_recipe(*extra):
    return load_recipe("recipes/long-context.yaml", ["seq_len=32", "batch_size=1", "recall_rows=0", "recall_every=0",
                                                     "save_every=0", *extra])


def test_time_limit_stops_and_saves_the_model_as_final(tmp_path):
    """A run that reaches `time_limit_minutes` ends after the step in flight and its model is the final one."""
    out = tmp_path / "run"
    summary = Trainer(_short_recipe("max_steps=50", "time_limit_minutes=1e-6"), fast_model(), out, progress=False).run()
    assert summary["steps"] == 1 and summary["planned_steps"] == 50 and summary["stopped_at_time_limit"]
    assert [m["step"] for m in _metrics(out) if "event" not in m] == [1]
    assert slconvert.router.routers(slconvert.load(out))
    assert json.loads((out / "training_summary.json").read_text())["stopped_at_time_limit"]


def test_log_lines_and_quiet_progress_lines_follow_their_cadence(tmp_path, capsys):
    """20 steps with log_every=3: metrics.jsonl holds steps 3, 6, ..., 18 and the last one, 20. Without a bar a line
    is printed after the first step and every tenth of the run (every 2 steps), the last one included."""
    Trainer(_short_recipe("max_steps=20", "log_every=3"), fast_model(), tmp_path / "run", progress=False).run()
    assert [m["step"] for m in _metrics(tmp_path / "run") if "event" not in m] == [3, 6, 9, 12, 15, 18, 20]
    printed = [int(m) for m in re.findall(r"^step (\d+)/20 ", capsys.readouterr().err, flags=re.M)]
    assert printed == [1, *range(2, 21, 2)]


def test_smoothed_loss_is_a_bias_corrected_average_that_restarts_on_resume(tmp_path):
    """loss_smooth is the exponential average (beta 0.95) of every step's loss divided by 1 - 0.95^n, n the steps
    since the run (or its resumption) began: after one step it is that step's loss, after two
    (0.05 * 0.95 * l1 + 0.05 * l2) / (1 - 0.95^2). A run stopped at step 2 logs that step even off the log_every
    cadence, and the resumed run's first step again smooths to its own loss."""
    model, out = fast_model(), tmp_path / "run"
    Trainer(_short_recipe("max_steps=4", "stop_at_step=2"), model, out, progress=False).run()
    first = [m for m in _metrics(out) if "event" not in m]
    assert [m["step"] for m in first] == [1, 2]
    l1, l2 = first[0]["loss"], first[1]["loss"]
    assert first[0]["loss_smooth"] == pytest.approx(l1, rel=1e-6)
    assert first[1]["loss_smooth"] == pytest.approx((0.05 * 0.95 * l1 + 0.05 * l2) / (1 - 0.95 ** 2), rel=1e-6)
    Trainer(_short_recipe("max_steps=4"), model, out, resume=True, progress=False).run()
    resumed = [m for m in _metrics(out) if "event" not in m and m["step"] > 2]
    assert [m["step"] for m in resumed] == [3, 4]
    assert resumed[0]["loss_smooth"] == pytest.approx(resumed[0]["loss"], rel=1e-6)

    stopped = tmp_path / "stopped"
    Trainer(_short_recipe("max_steps=4", "stop_at_step=2", "log_every=3"), model, stopped, progress=False).run()
    assert [m["step"] for m in _metrics(stopped) if "event" not in m] == [2]


def test_the_last_step_is_neither_a_time_limit_stop_nor_a_recall_during_the_run(tmp_path, capsys):
    """A time limit reached on the last step changes nothing: the run is complete, so there is no stop message and
    no checkpoint (save_every=0); recall_every=1 measures after every step but the last, where the "after"
    measurement is the one."""
    out = tmp_path / "run"
    summary = Trainer(_short_recipe("max_steps=1", "time_limit_minutes=1e-6", "recall_rows=16", "recall_every=1"),
                      fast_model(), out, progress=False).run()
    assert summary["steps"] == 1 and not summary["stopped_at_time_limit"]
    assert "time limit" not in capsys.readouterr().err and latest_checkpoint(out) is None
    assert [m["when"] for m in _metrics(out) if m.get("event") == "span_recall"] == ["before", "after"]


def test_accelerate_checkpoint_limit_deletes_the_old_checkpoint_before_saving(tmp_path, monkeypatch):
    """Why `checkpoints.prune` and not accelerate's `ProjectConfiguration(total_limit=...)`: accelerate removes the
    oldest checkpoint before it writes the new one, so a save that fails (a full disk, a killed job) leaves no
    checkpoint at all; the trainer writes the new one completely, renames it into place, then prunes."""
    import accelerate.accelerator
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    acc = Accelerator(cpu=True, project_config=ProjectConfiguration(
        project_dir=str(tmp_path), automatic_checkpoint_naming=True, total_limit=1))
    acc.prepare(torch.nn.Linear(2, 2))
    acc.save_state()
    first = tmp_path / "checkpoints" / "checkpoint_0"
    assert (first / "random_states_0.pkl").is_file()

    def full_disk(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(accelerate.accelerator, "save_accelerator_state", full_disk)
    with pytest.raises(OSError):
        acc.save_state()
    assert not first.exists()
    assert not any(p.is_file() for p in (tmp_path / "checkpoints").rglob("*"))


@pytest.mark.gpu
def test_a_gpu_run_loads_straight_onto_its_device_and_trains_in_bf16(tmp_path):
    """On a GPU, transformers places the weights on the device as it reads them (no whole-model copy in host
    memory), `precision: auto` is bf16 autocast, and a run stopped at a checkpoint resumes to its end there."""
    overrides = ["max_steps=3", "seq_len=64", "batch_size=2", "micro_batch_size=1", "save_every=2", "recall_rows=0",
                 "router_rows=16"]
    out = tmp_path / "run"
    trainer = Trainer(load_recipe("recipes/long-context.yaml", overrides + ["stop_at_step=2"]), fast_model(), out,
                      progress=False)
    # transformers 5.24 records where it put the weights as it read them; 5.17 records nothing, and then the
    # parameters themselves must sit on the GPU.
    placement = getattr(trainer.unwrapped, "hf_device_map", None) or {
        name: p.device for name, p in trainer.unwrapped.named_parameters()}
    assert {torch.device(d).type for d in placement.values()} == {"cuda"}, placement
    summary = trainer.run()
    assert summary["mixed_precision"] == "bf16" and summary["steps"] == 2 and summary["stopped_at_step"]
    resumed = Trainer(load_recipe("recipes/long-context.yaml", overrides), fast_model(), out, resume=True,
                      progress=False)
    assert resumed.start_step == 2
    summary = resumed.run()
    assert summary["mixed_precision"] == "bf16" and summary["steps"] == 3 and not summary["stopped_at_step"]
    assert slconvert.router.routers(slconvert.load(out))


def test_the_progress_line_says_the_time_left_from_the_mean_step_time():
    """Without a bar: after step 5 of 10, five steps in 10 s leave five more at 2 s each; a run resumed at step 5
    that has run three steps (to step 8) in 6 s has two left, 4 s."""
    assert progress_line(5, 10, 5, 1.23456, 1000, 10.0) == "step 5/10 loss 1.2346 (smoothed) 100 tokens/s, 10 s, eta 10 s"
    assert progress_line(8, 10, 3, 0.5, 600, 6.0).endswith("100 tokens/s, 6 s, eta 4 s")
    assert progress_line(10, 10, 10, 0.5, 10, 3.0).endswith("eta 0 s")
