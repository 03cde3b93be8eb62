"""Needle prompts in both styles: exact token lengths, wording, placement, refusals, scoring, known answers."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from needle_oracle import needle_answer, oracle_model
from transformers import ByT5Tokenizer

from slconvert.assets import TINY_TEACHER
from slconvert.errors import SlconvertError
from slconvert.evaluation.models import load_eval_model
from slconvert.evaluation.niah import score_teacher_forced
from slconvert.evaluation.niah_run import build_grid, grid_table, lengths_over, run_grid
from slconvert.tasks.haystack import (
    FileHaystack,
    NoiseHaystack,
    RepeatHaystack,
    SyntheticHaystack,
    load_haystack,
    sentence_starts,
)
from slconvert.tasks.niah import (
    TASKS,
    NiahSample,
    answer_kinds,
    build_sample,
    edit_distance,
    generation_budget,
    prompt_length,
    score_generation,
    score_sample,
)
from slconvert.tiny import build_tokenizer

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def byt5():
    return ByT5Tokenizer()


@pytest.mark.parametrize("style", ["slconvert", "ruler"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_prompts_have_the_exact_token_length(bpe, byt5, task, style):
    hay = load_haystack(None, 0, style)
    budget = 128 if style == "ruler" else 0  # RULER counts the generation budget in the length
    for tok in (bpe, byt5):
        for length in (1001, 1333):
            for depth in (0, 37.5, 100):
                sample = build_sample(tok, hay, task, length, depth, seed=3, value_kind="uuids", style=style)
                assert len(tok(sample.prompt)["input_ids"]) == length - budget
                assert len(sample.input_ids) == length - budget and sample.length == length
                for value in sample.expected:
                    assert sample.prompt.count(value) >= (2 if task == "passkey" else 1)
                assert sample.answer == " " + ", ".join(sample.expected)
                assert sorted(needle_answer(sample.prompt)) == sorted(sample.expected)  # the oracle reads it right


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
    assert score_generation(" Quiet-Otter", ["quiet-otter"]) == 0.0  # this tool's own style matches exactly
    assert score_generation(" Quiet-Otter", ["quiet-otter"], ignore_case=True) == 1.0  # RULER lower-cases
    assert score_generation(" quiet-otter", ["Quiet-Otter"], ignore_case=True) == 1.0  # both sides


def test_answer_kinds_tell_apart_answers_that_score_alike():
    values = ["1111111", "2222222", "3333333", "4444444"]
    records = [{"expected": values, "output": " 1111111, 2222222, 3333333, 4444444"},  # all four
               {"expected": values, "output": " 2222222, 2222222, 2222222, 2222222"},  # one value, four times
               {"expected": values, "output": " 3333333, 9999999"},  # one value and a wrong one
               {"expected": values, "output": " the"}]  # nothing
    kinds = answer_kinds(records)
    assert kinds["prompts"] == 4 and kinds["values_found"] == {0: 1, 1: 2, 4: 1}
    assert kinds["repeats_a_value"] == 0.25 and kinds["holds_another_number"] == 0.25
    assert kinds["near_copy_of_a_value"] == 0.0  # 9999999 is no value copied wrong
    # a value copied with a digit added, one with two replaced, and a number five or more edits from every value
    copies = answer_kinds([{"expected": values, "output": " 11111112"}, {"expected": values, "output": " 2222299"},
                           {"expected": values, "output": " 5556667"}])
    assert copies["holds_another_number"] == 1.0 and copies["near_copy_of_a_value"] == pytest.approx(2 / 3)
    # three digits replaced is no near copy (at most two)
    assert answer_kinds([{"expected": ["1111111"], "output": " 1112221"}])["near_copy_of_a_value"] == 0.0
    words = answer_kinds([{"expected": ["quiet-otter"], "output": " quiet-otter 12345"}])
    assert words["values_found"] == {1: 1} and words["holds_another_number"] is None  # no numeric values asked
    assert words["near_copy_of_a_value"] is None


def test_edit_distance():
    assert edit_distance("8260816", "82608160") == 1 and edit_distance("1234", "1243") == 2
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0


def test_ruler_wording_and_noise_haystack(bpe):
    hay = NoiseHaystack()
    one = build_sample(bpe, hay, "single", 900, 50, style="ruler")
    key = re.search(r"for (\S+) is: ", one.prompt).group(1)
    assert one.prompt.startswith("A special magic number is hidden within the following text. Make sure to memorize "
                                 "it. I will quiz you about the number afterwards.\nThe grass is green. The sky is blue.")
    assert one.prompt.endswith(f"\nWhat is the special magic number for {key} mentioned in the provided text? "
                               f"The special magic number for {key} mentioned in the provided text is")
    # the needle sits on a line of its own between whole groups of noise sentences, as in RULER
    assert f"again.\nOne of the special magic numbers for {key} is: {one.expected[0]}.\nThe grass" in one.prompt
    many = build_sample(bpe, hay, "multivalue", 900, 50, style="ruler")
    key = re.search(r"for (\S+) is: ", many.prompt).group(1)
    assert many.prompt.startswith("Some special magic numbers are hidden within the following text. Make sure to "
                                  "memorize it. I will quiz you about the numbers afterwards.\n")
    assert many.prompt.endswith(f"\nWhat are all the special magic numbers for {key} mentioned in the provided text? "
                                f"The special magic numbers for {key} mentioned in the provided text are")
    query = build_sample(bpe, hay, "multiquery", 900, 50, style="ruler")
    assert re.search(r"What are all the special magic numbers for \S+, \S+, \S+, and \S+ mentioned", query.prompt)
    assert one.style == "ruler" and not one.prompt.count("Answer:")


def test_ruler_depths_are_drawn_at_random_within_each_row(bpe):
    kwargs = dict(task="single", lengths=[900], depths=[0, 50, 100], samples=4, seed=1, key_kind="words",
                  value_kind="numbers", max_length=None, mode="generate", skip_too_long=False)
    grid = build_grid(bpe, NoiseHaystack(), style="ruler", **kwargs)
    again = build_grid(bpe, NoiseHaystack(), style="ruler", **kwargs)
    assert [s.prompt for s in grid.samples] == [s.prompt for s in again.samples]  # seeded
    ranges = {0.0: (0, 25), 50.0: (25, 75), 100.0: (75, 100)}
    drawn = [s.needle_depth for s in grid.samples]
    assert all(ranges[s.depth][0] <= s.needle_depth <= ranges[s.depth][1] for s in grid.samples)
    assert len(set(drawn)) == len(drawn) and not set(drawn) & {0.0, 50.0, 100.0}
    for s in grid.samples:  # the needle is where its depth says in the haystack (within a line of noise)
        start, end = s.prompt.index("\n") + 1, s.prompt.rindex("\nWhat is")
        assert abs((s.needle_chars[0] - start) / (end - start) - s.needle_depth / 100) < 0.12
    exact = build_grid(bpe, SyntheticHaystack(0), **kwargs)  # this tool's own style: exact depths
    assert [s.needle_depth for s in exact.samples] == [s.depth for s in exact.samples]


def test_essay_haystack_comes_from_a_local_folder(bpe, tmp_path):
    (tmp_path / "one.txt").write_text("First essay sentence.\n\nIt goes   on here.  " * 150)
    (tmp_path / "two.txt").write_text("Second essay. " * 150)
    hay = load_haystack(str(tmp_path), style="ruler")
    assert isinstance(hay, FileHaystack) and hay.describe()["kind"] == "essay"
    assert "\n" not in hay.text(0) and "  " not in hay.text(0)  # whitespace folded, as RULER reads its essays
    sample = build_sample(bpe, hay, "single", 1000, 50, style="ruler")
    assert re.search(r"\. One of the special magic numbers for \S+ is: \d+\. \w", sample.prompt)
    for spec in ("essay", "essays"):
        with pytest.raises(SlconvertError, match="pass --haystack DIR"):
            load_haystack(spec, style="ruler")
    assert isinstance(load_haystack(None, style="ruler"), NoiseHaystack)
    assert isinstance(load_haystack(None), SyntheticHaystack)  # the Python API keeps this tool's own default


def test_chat_template_wraps_the_question(bpe):
    with pytest.raises(SlconvertError, match="has no chat template; leave out --chat-template"):
        build_sample(bpe, NoiseHaystack(), "single", 900, 50, style="ruler", chat=True)
    bpe.chat_template = CHAT
    try:
        for style in ("ruler", "slconvert"):
            sample = build_sample(bpe, load_haystack(None, 0, style), "multikey", 900, 50, style=style, chat=True)
            assert sample.prompt.startswith("<|user|>\n") and not sample.special_tokens
            assert prompt_length(bpe, sample.prompt, special_tokens=False) == len(sample.input_ids)
            assert re.search(r"mentioned in the provided text\?\n<\|assistant\|>\n"
                             r"(Answer: )?The special magic number for \S+ mentioned in the provided text is$",
                             sample.prompt), sample.prompt[-200:]
            at = sample.needle_chars[0]
            assert sample.prompt[at:].startswith("One of the special magic numbers")
    finally:
        bpe.chat_template = None


def test_known_answers_on_every_task_in_both_styles():
    """A model that copies the asked needles scores 100, one that never answers 0: the scoring can fail."""
    copy, never = oracle_model(TINY_TEACHER, "copy"), oracle_model(TINY_TEACHER, "never")
    for style in ("ruler", "slconvert"):
        for task in sorted(TASKS):
            grid = build_grid(copy.tokenizer, load_haystack(None, 0, style), task=task, lengths=[400], depths=[0, 100],
                              samples=1, seed=0, key_kind="words", value_kind="numbers", max_length=None,
                              mode="generate", skip_too_long=False, style=style)
            right = run_grid(copy, grid, mode="generate", prefill_chunk=64)
            assert grid_table(grid, right)["average"] == 100.0, (style, task, [r["output"] for r in right])
            assert run_grid(copy, grid, mode="generate", prefill_chunk=64, batch=2) == right  # side by side
            assert grid_table(grid, run_grid(never, grid, mode="generate"))["average"] == 0.0
            budget = 128 if style == "ruler" else None
            assert all(r["tokens"] == 400 - (budget or 0) for r in right)
    for style, score in (("ruler", 1.0), ("slconvert", 0.0)):  # RULER lower-cases; this tool's style does not
        sample = build_sample(copy.tokenizer, load_haystack(None, 0, style), "single", 400, 50, value_kind="words",
                              style=style)
        assert score_sample(sample, sample.answer.upper()) == score


def test_a_batched_grid_is_the_grid_prompt_by_prompt():
    """The shipped tiny teacher (100% on the single needle) over a grid of two lengths, decoded three prompts at a
    time: the same records in the grid's order, the same outputs, all right."""
    em = load_eval_model(TINY_TEACHER, device="cpu")
    grid = build_grid(em.tokenizer, load_haystack(None, 0), task="single", lengths=[256, 384], depths=[0, 50, 100],
                      samples=1, seed=0, key_kind="words", value_kind="numbers", max_length=None, mode="generate",
                      skip_too_long=False)
    alone = run_grid(em, grid, mode="generate")
    together = run_grid(em, grid, mode="generate", batch=3)
    assert together == alone and [r["length"] for r in together] == [s.length for s in grid.samples]
    assert grid_table(grid, together)["average"] == 100.0


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
    # uniform logits: the answer's log-probability is the sum over its 3 tokens, 3 log(1/12)
    flat = score_teacher_forced(torch.zeros(prompt_len + len(answer), vocab), answer)
    assert flat["answer_logprob"] == pytest.approx(3 * math.log(1 / 12), rel=1e-5)


def test_generation_budget_of_each_style():
    """RULER's style generates up to 128 tokens whatever the answer; this tool's, the answer's length + 4."""
    sample = NiahSample(task="single", length=900, depth=50.0, sample=0, seed="0", prompt="", input_ids=[],
                        expected=["1234567"], answer=" 1234567")
    assert generation_budget(sample, 5) == 9
    assert generation_budget(dataclasses.replace(sample, style="ruler"), 5) == 128


def test_lengths_over_the_context_count_the_budget_and_one_answer_token():
    """A length L needs L - budget prompt tokens and at least one answer token: with an 800-token context, this
    tool's style fits up to 799, RULER's (128 of the length are its budget: 800 prompt tokens at 928) up to 927."""
    assert lengths_over([799, 800], 800, "slconvert", skip_too_long=True) == [800]
    assert lengths_over([927, 928], 800, "ruler", skip_too_long=True) == [928]
    assert lengths_over([5000], None, "slconvert", skip_too_long=False) == []


def test_ruler_lengths_count_the_generation_budget(bpe):
    kwargs = dict(task="single", lengths=[900], depths=[50], samples=1, seed=0, key_kind="words",
                  value_kind="numbers", mode="generate", style="ruler")
    assert len(build_grid(bpe, NoiseHaystack(), max_length=900, skip_too_long=False, **kwargs).samples) == 1
    with pytest.raises(SlconvertError, match="do not fit the model's 899 tokens"):
        build_grid(bpe, NoiseHaystack(), max_length=899, skip_too_long=False, **kwargs)
    with pytest.raises(SlconvertError, match="after the 128-token generation budget.*use lengths of at least"):
        build_sample(bpe, NoiseHaystack(), "single", 300, 50, style="ruler")


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
    # a prompt that a comparison model could not hold (score NaN, marked skipped) counts as skipped, not scored
    records[0] = {**records[0], "score": math.nan, "skipped": "does not fit the model's context"}
    table = grid_table(grid, records)
    assert table["skipped"] == 5 and table["scored"] == 3 and table["average"] == 100.0


def test_sentence_starts_and_haystack_lengths():
    """A needle may go before any sentence or at the very end, and every generated haystack hands out at least the
    characters asked for (the prompt builder cuts it, it never pads), even when fewer than one repeat are asked."""
    assert sentence_starts("A b. C d.") == [0, 5, 9]
    assert sentence_starts("One.\n\nTwo") == [0, 6, 9]
    for hay in (RepeatHaystack(), NoiseHaystack()):
        for n in (1, 10, 95, 200, 1001):
            assert len(hay.text(n)) >= n
    assert len(RepeatHaystack().text(10)) == len(RepeatHaystack.FILLER)  # one filler paragraph covers 10 characters


def test_builtin_haystack_paragraphs_hold_four_to_eight_sentences():
    """The generated text comes in paragraphs of 4 to 8 sentences, each ending in '.'; the word lists hold no '.'."""
    counts = set()
    for seed in range(5):
        for paragraph in SyntheticHaystack(seed).text(20000).split("\n\n")[:-1]:
            counts.add(paragraph.count("."))
    assert counts == {4, 5, 6, 7, 8}


def test_haystack_names_and_file_suffixes_ignore_case(tmp_path):
    """`--haystack Builtin` or `NOISE` names the generated haystacks, and a folder's NOTES.TXT is a text file."""
    assert isinstance(load_haystack(" Builtin "), SyntheticHaystack)
    assert isinstance(load_haystack("NOISE"), NoiseHaystack)
    folder = tmp_path / "upper"
    folder.mkdir()
    (folder / "NOTES.TXT").write_text("Upper case suffix. " * 5)
    hay = load_haystack(str(folder))
    assert [f.name for f in hay.files] == ["NOTES.TXT"] and "Upper case suffix." in hay.text(10)


def test_grid_cells_hold_one_to_max_samples_prompts():
    """--samples 1 and --samples 1000 (MAX_SAMPLES) are grids; 0 and 1001 are refused before any model loads."""
    from slconvert.evaluation.niah_run import MAX_SAMPLES, check_cells

    assert MAX_SAMPLES == 1000
    check_cells([0, 100], 1)
    check_cells([50], 1000)
    for samples in (0, 1001):
        with pytest.raises(SlconvertError, match=f"--samples {samples}"):
            check_cells([50], samples)


def test_haystack_files_are_joined_in_sorted_order_a_blank_line_apart(tmp_path):
    """Each file stripped, empty ones dropped, a paragraph break between files and after the last; the essay style
    folds every run of whitespace, across files too, into one space."""
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("  Second file.\nIts second line.\n\n")
    (folder / "a.md").write_text("First file.")
    (folder / "sub" / "c.txt").write_text("Third   file.")
    (folder / "empty.txt").write_text(" \n ")
    hay = load_haystack(str(folder))
    assert [f.name for f in hay.files] == ["a.md", "b.txt", "empty.txt", "c.txt"]
    assert hay.text(0) == "First file.\n\nSecond file.\nIts second line.\n\nThird   file.\n\n"
    assert hay.describe() == {"kind": "files", "files": [str(f) for f in hay.files], "chars": len(hay.text(0))}
    essay = load_haystack(str(folder), style="ruler")
    assert essay.text(0) == "First file. Second file. Its second line. Third file. "


def test_prompts_whose_answers_do_not_fit_are_listed_once_each_by_length_as_numbers(bpe):
    """Within `lengths_over`'s bound, an answer of 8 tokens still overflows: such lengths are listed by their value
    (999 before 1001, which a string sort would reverse), each with the tokens it needs."""
    kwargs = dict(task="single", lengths=[1002, 999, 1001], depths=[50], samples=1, seed=0, key_kind="words",
                  value_kind="numbers", max_length=1003, mode="teacher")
    with pytest.raises(SlconvertError) as error:
        build_grid(bpe, SyntheticHaystack(0), skip_too_long=False, **kwargs)
    assert str(error.value) == ("prompts of length 999 (needs 1007), 1001 (needs 1008), 1002 (needs 1010) do not fit "
                                "the model's 1003 tokens; drop those --lengths, raise --max-length, or pass "
                                "--skip-too-long to skip and count them")


def test_generate_mode_decodes_at_most_batch_prompts_of_one_length_at_a_time(monkeypatch):
    """Five prompts of one token length with batch=2: groups of 2, 2 and the rest; batch=1 one at a time."""
    from slconvert.evaluation import niah_run

    copy = oracle_model(TINY_TEACHER, "copy")
    grid = build_grid(copy.tokenizer, load_haystack(None, 0), task="single", lengths=[400],
                      depths=[0, 25, 50, 75, 100], samples=1, seed=0, key_kind="words", value_kind="numbers",
                      max_length=None, mode="generate", skip_too_long=False)
    sizes, real = [], niah_run.greedy_generate

    def counted(model, prompts, *args, **kwargs):
        sizes.append(len(prompts))
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(niah_run, "greedy_generate", counted)
    for batch, expected in ((2, [2, 2, 1]), (1, [1] * 5), (5, [5]), (9, [5])):
        sizes.clear()
        records = run_grid(copy, grid, mode="generate", batch=batch)
        assert sizes == expected and grid_table(grid, records)["average"] == 100.0, batch


def test_ruler_prompts_also_stop_at_the_models_end_of_turn_tokens():
    """RULER's style stops at the generation config's end-of-sequence tokens too (a chat model's end of turn); this
    tool's own style at the tokenizer's alone."""
    from types import SimpleNamespace

    from slconvert.evaluation.niah_run import _stop_tokens

    def em(extra):
        return SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=2),
                               model=SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=extra)))

    sample = NiahSample(task="single", length=900, depth=50.0, sample=0, seed="0", prompt="", input_ids=[],
                        expected=["1"], answer=" 1")
    ruler = dataclasses.replace(sample, style="ruler")
    assert _stop_tokens(em([7, 2, 9]), sample) == [2]
    assert _stop_tokens(em([7, 2, 9]), ruler) == [2, 7, 9]
    assert _stop_tokens(em(11), ruler) == [2, 11]
    assert _stop_tokens(em(None), ruler) == [2]


@pytest.mark.parametrize("lengths, built", [([9000, 4096], 4096), ([4097, 9000], None), ([], None), ([30, 5000], 30)])
def test_the_shortest_length_is_built_before_loading_only_up_to_4096_tokens(lengths, built, monkeypatch):
    """One prompt at the shortest length when it is at most FLOOR_CHECKED (4096) tokens; longer, nothing is read."""
    from slconvert import loading
    from slconvert.evaluation import niah_run

    calls = []
    monkeypatch.setattr(loading, "load_tokenizer", lambda path: calls.append(("tokenizer", path)) or "tok")
    monkeypatch.setattr(niah_run, "build_sample", lambda tok, hay, task, length, *a, **k: calls.append(length))
    assert niah_run.FLOOR_CHECKED == 4096
    niah_run.check_shortest("model-dir", NoiseHaystack(), lengths, task="single", depth=50, seed=0, key_kind="words",
                            value_kind="numbers", style="slconvert", chat=False)
    assert calls == ([] if built is None else [("tokenizer", "model-dir"), built])


def test_word_lists_hold_distinct_plain_lowercase_words():
    """Needle keys are "adjective-noun" (matched as [a-z]+-[a-z]+) and haystack sentences end at their only period,
    so the word lists hold distinct lowercase words without punctuation, the places lowercase phrases, and the
    connectives capitalized words that open a sentence."""
    from slconvert.tasks.wordlists import ADJECTIVES, CONNECTIVES, NOUNS, PLACES, VERBS

    for words in (ADJECTIVES, NOUNS, VERBS, PLACES, CONNECTIVES):
        assert len(set(words)) == len(words) >= 7
    assert all(re.fullmatch(r"[a-z]+", w) for w in (*ADJECTIVES, *NOUNS, *VERBS))
    assert len(PLACES) == 10 and all(re.fullmatch(r"[a-z]+( [a-z]+)+", p) for p in PLACES)
    assert all(re.fullmatch(r"[A-Z][a-z]+( [a-z]+)*", c) for c in CONNECTIVES)


def test_niah_heatmap_writes_every_cell_of_a_20_by_20_grid_and_greys_a_skipped_one(tmp_path, drawn_figures):
    """Cells are written out up to 400 of them (a 20 x 20 grid included); a skipped (None) cell reads "skip" and
    is masked, not drawn as a score of 0; the title carries the average to one decimal."""
    from slconvert.evaluation import plots

    scores = [[float(i + j) for j in range(20)] for i in range(20)]
    scores[3][4] = None
    table = {"task": "single", "lengths": [256 * (k + 1) for k in range(20)], "depths": [5.0 * k for k in range(20)],
             "scores": scores, "average": 37.3}
    plots.niah_heatmap(table, tmp_path / "heat.png", "tiny")
    ax = drawn_figures[0].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 400 and texts.count("skip") == 1 and texts[3 * 20 + 4] == "skip"
    assert texts[3 * 20 + 5] == "8" and texts[399] == "38"
    assert ax.images[0].get_array().mask[3, 4] and not ax.images[0].get_array().mask[3, 5]
    assert ax.get_title() == "tiny: NIAH single\naverage 37.3"


def test_niah_comparison_draws_the_difference_on_a_scale_centred_on_zero(tmp_path, drawn_figures):
    """The difference panel runs from -100 to +100 (a loss as far below zero as a gain above it), signed labels."""
    from slconvert.evaluation import plots

    base = {"task": "single", "lengths": [256, 512], "depths": [0.0], "scores": [[100.0, 40.0]], "average": 70.0}
    model = {**base, "scores": [[90.0, 60.0]], "average": 75.0}
    diff = {**base, "scores": [[-10.0, 20.0]], "average": 5.0}
    plots.niah_comparison(model, base, diff, tmp_path / "cmp.png", "tiny", "src")
    axes = drawn_figures[0].axes
    assert axes[0].images[0].get_clim() == (0.0, 100.0) and axes[2].images[0].get_clim() == (-100.0, 100.0)
    assert [t.get_text() for t in axes[2].texts] == ["-10", "+20"]
    assert axes[1].get_title() == "src (source)\naverage 70.0"


def test_span_recall_heatmap_shows_percent(tmp_path, drawn_figures):
    """Recall fractions are drawn and written in percent: 0.5 -> 50, 0.25 -> 25; rows are named by layer."""
    from slconvert.evaluation import plots

    plots.span_recall_heatmap([[0.5, 0.25], [1.0, 0.0]], [1, 3], tmp_path / "recall.png", "tiny", 0.4375)
    ax = drawn_figures[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["50", "25", "100", "0"]
    assert ax.images[0].get_array().tolist() == [[50.0, 25.0], [100.0, 0.0]]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "3"]
    assert ax.get_title() == "tiny: span recall\naverage 43.8%"
