"""The output head applied by the loss a chunk at a time (slconvert/training/logits.py): the same losses and
gradients as the model's own logits on every tiny hybrid, a fallback where the forward does something after the
head that does not commute with it, and a training step that never holds the logits of a whole sequence."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from test_train_helpers import fast_model

from slconvert.tiny import tiny_config
from slconvert.training import Trainer, load_recipe, losses
from slconvert.training.logits import apply_head, chunked_head, head_bypassed, output_head


def _tiny(model_type: str, **config_overrides):
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _batch(vocab: int, length: int = 37):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, length), generator=gen)
    labels = ids.clone()
    labels[0, :20] = -100
    return ids, labels


@pytest.mark.parametrize("model_type, overrides", [
    ("nemotron_h", {}),  # its forward returns float32 logits
    ("granitemoehybrid", {"logits_scaling": 4.0}),  # divides the logits by a scale
    ("jamba", {}),
    ("qwen3_next", {}),
])
def test_head_after_the_forward_gives_the_models_loss_and_gradients(model_type, overrides, monkeypatch):
    monkeypatch.setattr(losses, "_LOSS_CHUNK", 8)
    model = _tiny(model_type, **overrides)
    vocab = model.config.vocab_size
    head = chunked_head(model, model, vocab, torch.device("cpu"))
    assert head is not None
    ids, labels = _batch(vocab)

    full_sums, counts = losses.next_token_sums(model(input_ids=ids, use_cache=False).logits, labels)
    full_grads = torch.autograd.grad(full_sums.sum(), list(model.parameters()), allow_unused=True)
    with head_bypassed(output_head(model)):
        states = model(input_ids=ids, use_cache=False).logits
    assert states.shape[-1] == model.config.hidden_size
    sums, same_counts = losses.next_token_sums(states, labels, head)
    grads = torch.autograd.grad(sums.sum(), list(model.parameters()), allow_unused=True)

    assert torch.equal(counts, same_counts)
    torch.testing.assert_close(sums, full_sums, rtol=1e-5, atol=1e-5)
    for (name, _), got, expected in zip(model.named_parameters(), grads, full_grads):
        assert (got is None) == (expected is None), name
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6, msg=name)
    assert output_head(model).forward(torch.ones(1, model.config.hidden_size)).shape[-1] == vocab  # restored


def test_distillation_with_heads_after_both_forwards_matches_the_logits():
    model = _tiny("nemotron_h")
    teacher = _tiny("nemotron_h")
    with torch.no_grad():
        teacher.get_output_embeddings().weight.mul_(3)
    vocab = model.config.vocab_size
    ids, labels = _batch(vocab)
    full, _ = losses.distill_sums(model(input_ids=ids).logits, teacher(input_ids=ids).logits, labels, 2.0)
    with head_bypassed(output_head(model)), head_bypassed(output_head(teacher)):
        states, teacher_states = model(input_ids=ids).logits, teacher(input_ids=ids).logits
    late, _ = losses.distill_sums(states, teacher_states, labels, 2.0, apply_head(output_head(model)),
                                  apply_head(output_head(teacher)))
    torch.testing.assert_close(late, full, rtol=1e-5, atol=1e-5)
    assert float(full.detach().min()) > 0.01  # the teacher differs: a KL that could hide a wrong head


class _AfterHead(torch.nn.Module):
    """A model whose forward does `after` to the logits its head made; the head's own forward may be bypassed, and
    `after` then sees the last states instead."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after = inner, after

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs):
        return SimpleNamespace(logits=self.after(self.inner(**kwargs).logits))


def test_a_head_that_does_not_commute_with_what_follows_it_keeps_the_full_logits():
    inner = _tiny("nemotron_h")
    vocab = inner.config.vocab_size
    capped = _AfterHead(inner, lambda logits: 0.5 * torch.tanh(logits / 0.5))  # as Gemma's final_logit_softcapping
    assert chunked_head(capped, capped, vocab, torch.device("cpu")) is None
    assert chunked_head(inner, inner, vocab, torch.device("cpu")) is not None


@pytest.mark.parametrize("chunked", [True, False])
def test_a_training_step_never_holds_the_logits_of_a_whole_sequence(chunked, monkeypatch, tmp_path):
    """Every call of the head that makes logits during two steps and the span-recall measurements covers at most
    one loss chunk; with the full logits (the fallback) the same hook sees the whole sequence, so the check can
    fail."""
    monkeypatch.setattr(losses, "_LOSS_CHUNK", 16)
    recipe = load_recipe("recipes/long-context.yaml", ["max_steps=2", "seq_len=64", "batch_size=1", "save_every=0",
                                                       "recall_rows=16", "router_kl_weight=0", "trainable=all"])
    trainer = Trainer(recipe, fast_model(), tmp_path / "run", progress=False)
    assert trainer.head is not None
    if not chunked:
        trainer.head = None
    vocab = trainer.unwrapped.config.vocab_size
    positions = []
    trainer.unwrapped.get_output_embeddings().register_forward_hook(
        lambda module, args, output: positions.append(output.shape[1]) if output.shape[-1] == vocab else None)
    trainer.run()
    assert positions and max(positions) == (16 if chunked else 64), positions
    recall = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"span_recall"' in line]
    assert recall  # span recall ran its forwards too, without the head


def _checked(after, inner=None):
    inner = inner if inner is not None else _tiny("nemotron_h")
    model = _AfterHead(inner, after)
    return chunked_head(model, model, inner.config.vocab_size, torch.device("cpu"))


def test_a_head_without_parameters_keeps_the_full_logits():
    inner = _tiny("nemotron_h")
    inner.lm_head = torch.nn.Identity()
    assert output_head(inner) is not None and chunked_head(inner, inner, 384, torch.device("cpu")) is None


@pytest.mark.parametrize("keep", [100, 32])  # wider than hidden (64): other logits' shape; narrower: states won't fit
def test_a_forward_that_slices_the_vocabulary_after_the_head_keeps_the_full_logits(keep):
    assert _checked(lambda logits: logits[..., :keep]) is None


def test_a_bf16_head_after_a_float32_forward_is_called_in_its_own_dtype():
    """NemotronH casts its logits to float32 after the head, so the bypassed forward hands back float32 states."""
    inner = _tiny("nemotron_h").to(torch.bfloat16)
    head = chunked_head(inner, inner, 384, torch.device("cpu"))
    assert head is not None
    ids = torch.arange(5)[None]
    with torch.no_grad(), head_bypassed(output_head(inner)):
        states = inner(input_ids=ids).logits
    assert states.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(head(states), inner(input_ids=ids).logits.to(torch.bfloat16))


@pytest.mark.parametrize("ratio, kept", [(0.015, True), (0.025, False)])
def test_a_difference_over_two_percent_of_the_largest_logit_keeps_the_full_logits(ratio, kept):
    """A bias on one vocabulary entry after the head (bypassed, the forward cannot add it: the states are not
    logits), `ratio` times the largest logit: the head alone is within the tolerance at 1.5%, not at 2.5%."""
    def bias_after_head(logits):
        if logits.shape[-1] != 384:
            return logits
        bias = torch.zeros(384)
        bias[logits[0, 0].abs().argmin()] = ratio * float(logits.abs().max())
        return logits + bias

    assert (_checked(bias_after_head) is not None) == kept
