"""Needle prompts: exact token lengths, needle placement, refusals, scoring; no model needed."""

from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer

from slconvert.errors import SlconvertError
from slconvert.evaluation.haystack import FileHaystack, RepeatHaystack, SyntheticHaystack, load_haystack
from slconvert.evaluation.niah import TASKS, build_sample, prompt_length, score_generation, score_teacher_forced
from slconvert.evaluation.niah_run import build_grid, grid_table
from slconvert.tiny import build_tokenizer


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def byt5():
    return ByT5Tokenizer()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_prompts_have_the_exact_token_length(bpe, byt5, task):
    hay = SyntheticHaystack(0)
    for tok in (bpe, byt5):
        for length in (1001, 1333):
            for depth in (0, 37.5, 100):
                sample = build_sample(tok, hay, task, length, depth, seed=3, value_kind="uuids")
                assert len(tok(sample.prompt)["input_ids"]) == length
                assert len(sample.input_ids) == length
                for value in sample.expected:
                    assert sample.prompt.count(value) >= (2 if task == "passkey" else 1)
                assert sample.answer == " " + ", ".join(sample.expected)


def test_task_shapes(bpe):
    hay = SyntheticHaystack(1)
    counts = {task: build_sample(bpe, hay, task, 1200, 50) for task in TASKS}
    assert len(counts["single"].expected) == 1
    assert len(counts["multikey"].expected) == 1 and len(counts["multikey"].needle_chars) == 4
    assert len(counts["multivalue"].expected) == 4
    assert len(counts["multiquery"].expected) == 4
    for kind, pattern in (("numbers", r"^\d{7}$"), ("uuids", r"^[0-9a-f-]{36}$"), ("words", r"^[a-z]+-[a-z]+$")):
        sample = build_sample(bpe, hay, "single", 800, 50, value_kind=kind)
        assert __import__("re").match(pattern, sample.expected[0]), sample.expected


def test_needle_depth_and_sentence_boundary(bpe):
    hay = SyntheticHaystack(2)
    positions = []
    for depth in (0, 50, 100):
        sample = build_sample(bpe, hay, "single", 1500, depth)
        at = sample.needle_chars[0]
        assert sample.prompt[at:].startswith("One of the special magic numbers")
        before = sample.prompt[:at]
        assert before.endswith("\n\n") or before.endswith(". "), repr(before[-10:])
        positions.append(at / len(sample.prompt))
    assert positions[0] < 0.15 < positions[1] < positions[2]
    assert 0.35 < positions[1] < 0.65


def test_prompts_are_reproducible_and_vary_by_sample(bpe):
    a = build_sample(bpe, SyntheticHaystack(0), "multikey", 900, 40, 0, seed=5)
    b = build_sample(bpe, SyntheticHaystack(0), "multikey", 900, 40, 0, seed=5)
    c = build_sample(bpe, SyntheticHaystack(0), "multikey", 900, 40, 1, seed=5)
    assert a.prompt == b.prompt and a.expected == b.expected
    assert c.expected != a.expected


def test_refuses_lengths_below_the_template(bpe):
    with pytest.raises(SlconvertError, match="shorter than the prompt without haystack"):
        build_sample(bpe, SyntheticHaystack(0), "single", 50, 50)


def test_user_haystack_files_and_too_short_corpus(bpe, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha beta gamma. " * 200)
    (folder / "b.md").write_text("Delta epsilon. " * 200)
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    hay = load_haystack(str(folder))
    assert isinstance(hay, FileHaystack) and len(hay.files) == 2
    sample = build_sample(bpe, hay, "single", 1000, 50)
    assert prompt_length(bpe, sample.prompt) == 1000 and "Alpha beta" in sample.prompt
    with pytest.raises(SlconvertError, match="add more text"):
        build_sample(bpe, hay, "single", 20000, 50)
    with pytest.raises(SlconvertError, match="does not exist"):
        load_haystack(str(tmp_path / "missing"))
    assert isinstance(load_haystack("repeat"), RepeatHaystack)


def test_generation_scoring():
    assert score_generation(" 1234567, and more", ["1234567"]) == 1.0
    assert score_generation(" 1234567", ["1234567", "7654321"]) == 0.5
    assert score_generation(" 123456", ["1234567"]) == 0.0


def test_teacher_forced_scoring_of_a_known_answer():
    answer = [5, 9, 2]
    prompt_len, vocab = 6, 12
    logits = torch.zeros(prompt_len + len(answer), vocab)
    for i, token in enumerate(answer):  # the position before each answer token predicts it
        logits[prompt_len - 1 + i, token] = 10.0
    right = score_teacher_forced(logits, answer)
    assert right["exact"] == 1.0 and right["token_accuracy"] == 1.0 and right["answer_logprob"] > -0.01
    logits[prompt_len, 9] = -10.0
    wrong = score_teacher_forced(logits, answer)
    assert wrong["exact"] == 0.0 and wrong["token_accuracy"] == pytest.approx(2 / 3)


def test_grid_refuses_or_counts_prompts_over_the_context(bpe):
    kwargs = dict(task="single", lengths=[600, 900], depths=[0, 100], samples=2, seed=0, key_kind="words",
                  value_kind="numbers", max_length=800, mode="teacher")
    with pytest.raises(SlconvertError, match="do not fit the model's 800 tokens"):
        build_grid(bpe, SyntheticHaystack(0), skip_too_long=False, **kwargs)
    grid = build_grid(bpe, SyntheticHaystack(0), skip_too_long=True, **kwargs)
    assert len(grid.samples) == 4 and len(grid.skipped) == 4
    assert {s["length"] for s in grid.skipped} == {900}
    records = [{**s.to_dict(), "score": 1.0} for s in grid.samples]
    table = grid_table(grid, records)
    assert table["lengths"] == [600, 900] and table["depths"] == [0, 100]
    assert table["scores"] == [[100.0, None], [100.0, None]]
    assert table["skipped"] == 4 and table["average"] == 100.0
