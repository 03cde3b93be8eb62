"""Training presets change exactly what they name, on tiny converted models of several architectures;
a LoRA run writes merged weights that `slconvert.load` opens and that compute what the adapted model did."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_helpers import converted

import slconvert
from slconvert.errors import SlconvertError
from slconvert.training import Trainer, load_recipe
from slconvert.training.recipe import LoraSpec
from slconvert.training.trainable import apply_lora, select_trainable

# model_type -> (layer pattern of the fixture, name of the sequence-mixer module, of the attention module).
# Written out here, independently of the architecture table that the presets read.
CASES = {
    "nemotron_h": ("MAEA", "mixer", "mixer"),
    "jamba": ("MAMA", "mamba", "self_attn"),
    "granitemoehybrid": ("MAMA", "mamba", "self_attn"),
    "qwen3_next": ("LALA", "linear_attn", "self_attn"),
    "lfm2": ("CACA", "conv", "self_attn"),
}


def _expected(model_type: str, names: list[str], preset: str) -> set[str]:
    pattern, mixer, attention = CASES[model_type]
    prefixes = [f"model.layers.{i}.{attention}." for i, c in enumerate(pattern) if c == "A"]
    if preset == "mixers":
        prefixes += [f"model.layers.{i}.{mixer}." for i, c in enumerate(pattern) if c not in "AE"]
    if preset == "router":
        return {n for n in names if "superlinear_router" in n}
    if preset == "all":
        return set(names)
    return {n for n in names if any(n.startswith(p) for p in prefixes)}


@pytest.mark.parametrize("model_type", sorted(CASES))
@pytest.mark.parametrize("preset", ["router", "attention", "mixers", "all"])
def test_preset_changes_exactly_what_it_names(model_type, preset):
    model = slconvert.load(converted(model_type, layers=CASES[model_type][0]))
    model.train()
    names = [n for n, _ in model.named_parameters()]
    chosen = set(select_trainable(model, preset))
    assert chosen == _expected(model_type, names, preset)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = torch.randint(4, 300, (2, 80), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed <= chosen  # nothing outside the preset moves
    assert changed == {n for n in chosen if grads[n]}  # everything inside it that had a gradient moves
    if preset in ("router", "attention", "mixers"):  # these modules all take part in every forward
        assert changed == chosen


def test_mixers_preset_refuses_an_architecture_without_mixers(monkeypatch):
    from slconvert import architectures

    model = slconvert.load(converted("nemotron_h", layers="MAEA"))
    row = architectures.ARCHITECTURES["nemotron_h"]
    monkeypatch.setitem(architectures.ARCHITECTURES, "nemotron_h", architectures.Architecture(
        **{**row.__dict__, "mixer_path": None}))
    with pytest.raises(SlconvertError, match="no sequence mixers"):
        select_trainable(model, "mixers")


def test_lora_adapts_attention_and_mixer_projections_and_trains_routers_and_norms():
    """`trainable: lora` on a NemotronH (Mamba-2, attention, MoE, attention): adapters on the converted attention's
    q/k/v/o projections and on the Mamba-2 in_proj (out_proj is left out for Mamba-2), never on the MoE, embeddings
    or head; routers and every norm train fully, every other base weight is frozen. Names written out by hand."""
    model = slconvert.load(converted("nemotron_h", layers="MAEA"))
    wrapped = apply_lora(model, LoraSpec(rank=4))
    prefix = "base_model.model."
    adapted = {n[len(prefix):].split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
    assert adapted == {"model.layers.0.mixer.in_proj",
                       *(f"model.layers.{i}.mixer.{p}_proj" for i in (1, 3) for p in "qkvo")}
    full = {n[len(prefix):] for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" not in n}
    assert full == {"model.layers.1.mixer.superlinear_router.weight", "model.layers.3.mixer.superlinear_router.weight",
                    "model.layers.0.mixer.norm.weight", "model.norm_f.weight",
                    *(f"model.layers.{i}.norm.weight" for i in range(4))}
    assert all(p.requires_grad for n, p in wrapped.named_parameters() if "lora_" in n)
    # lora.mlp: the other linear layers of the decoder blocks too (the MoE's shared experts), never the head
    wrapped = apply_lora(slconvert.load(converted("nemotron_h", layers="MAEA")), LoraSpec(rank=4, mlp=True))
    with_mlp = {n[len(prefix):].split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
    assert with_mlp - adapted == {"model.layers.2.mixer.shared_experts.up_proj",
                                  "model.layers.2.mixer.shared_experts.down_proj"}


@pytest.mark.parametrize("model_type", ["nemotron_h", "qwen3_next"])
def test_lora_run_writes_a_merged_model_that_loads_and_generates(model_type, tmp_path):
    pattern, mixer, attention = CASES[model_type]
    source = converted(model_type, layers=pattern)
    recipe = load_recipe("recipes/niah-curriculum.yaml", [
        "trainable=lora", "lora.rank=4", "max_steps=3", "curriculum=[]", "seq_len=288", "batch_size=2",
        "micro_batch_size=2", "router_kl_weight=0", "recall_rows=0", "data.niah_tasks=[single]", "save_every=0", "lr=1e-2",
        "gradient_checkpointing=false", "warmup_steps=0"])
    trainer = Trainer(recipe, source, tmp_path / "run", progress=False)
    trainer.run()
    out = tmp_path / "run"
    adapter = json.loads((out / "lora-adapter" / "adapter_config.json").read_text())
    targets = set(adapter["target_modules"])
    assert targets and all(f".{attention}." in t or f".{mixer}." in t for t in targets)
    # The merged checkpoint computes what the adapted model computed.
    ids = torch.randint(4, 300, (1, 70), generator=torch.Generator().manual_seed(1))
    trainer.unwrapped.eval()
    with torch.no_grad():
        want = trainer.unwrapped(input_ids=ids).logits
        loaded = slconvert.load(out)
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # Only adapted layers, routers and norms differ from the source.
    src, new = slconvert.load(source).state_dict(), loaded.state_dict()
    moved = {n for n in src if not torch.equal(src[n], new[n])}
    assert any("superlinear_router" in n for n in moved)
    assert all(any(f".{m}." in n for m in (attention, mixer)) or "norm" in n for n in moved), sorted(moved)
    assert not any("embed" in n or "lm_head" in n or "experts" in n for n in moved)
    generated = loaded.generate(ids[:, :40], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 45)
