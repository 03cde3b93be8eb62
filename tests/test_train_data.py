"""Training data: exact-length needle samples, text packing, determinism, the split over processes."""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import converted
from transformers import AutoTokenizer

import slconvert
from slconvert.errors import SlconvertError
from slconvert.tasks.haystack import SyntheticHaystack
from slconvert.tasks.niah import TASKS
from slconvert.tasks.text import DOCUMENT_SUFFIXES, TEXT_SUFFIXES
from slconvert.training.data import (
    IGNORE,
    NiahGenerator,
    SentencePool,
    SequenceSource,
    find_text_files,
    in_answer_order,
)
from slconvert.training.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(converted("granitemoehybrid", layers="MAMA"))


@pytest.mark.parametrize("haystack", ["builtin", "noise"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_needle_sample_has_exact_length_and_answer_targets(tokenizer, task, haystack):
    pool = SentencePool(tokenizer, SyntheticHaystack(3).text(20000)) if haystack == "builtin" else None
    gen = NiahGenerator(tokenizer, haystack, pool, "words", "numbers", 384)
    sample = gen.sample(random.Random(5), 900, task)
    assert len(sample.input_ids) == len(sample.labels) == 900
    target = sample.labels != IGNORE
    first = int(np.argmax(target))
    assert target[first:].all() and not target[:first].any()  # the answer is the end of the sequence
    assert sample.labels[-1] == tokenizer.eos_token_id
    answer = tokenizer.decode(sample.input_ids[target][:-1])
    context = tokenizer.decode(sample.input_ids[:first])
    # the targets start right after the question's answer prefix ("... is" / "... are"), with the answer's own
    # leading space: no answer token is left untrained
    assert context.endswith((" is", " are")) and answer.startswith(" ")
    values = [v.strip() for v in answer.split(",")]
    assert len(values) == TASKS[task].queries * TASKS[task].values_per_key
    for value in values:  # every answer value was planted in the context
        assert value.isdigit() and value in context
    assert gen.sample(random.Random(5), 900, task).input_ids.tolist() == sample.input_ids.tolist()


def _positions(text: str, values: list[str]) -> list[int]:
    return [text.index(value) for value in values]


@pytest.mark.parametrize("task", ["multivalue", "multiquery", "multikey"])
def test_needles_in_answer_order_stand_where_the_answer_reads_them(tokenizer, task):
    """needle_order=answer: a key's needles stand in the context in the order the answer lists their values;
    the sample is otherwise the shuffled one (same length, answer, haystack, places, distractors)."""
    pool = SentencePool(tokenizer, SyntheticHaystack(3).text(20000))
    shuffled = NiahGenerator(tokenizer, "builtin", pool, "words", "numbers", 384)
    ordered = NiahGenerator(tokenizer, "builtin", pool, "words", "numbers", 384, needle_order="answer")
    in_order = out_of_order = 0
    for seed in range(12):
        a, b = shuffled.sample(random.Random(seed), 900, task), ordered.sample(random.Random(seed), 900, task)
        first = int(np.argmax(b.labels != IGNORE))
        assert b.labels.tolist() == a.labels.tolist() and len(b.input_ids) == 900
        assert sorted(a.input_ids[:first].tolist()) == sorted(b.input_ids[:first].tolist())  # the same pieces
        values = [v.strip() for v in tokenizer.decode(b.input_ids[first:-1]).split(",")]
        spots = _positions(tokenizer.decode(b.input_ids[:first]), values)
        before = _positions(tokenizer.decode(a.input_ids[:first]), values)
        assert sorted(spots) == sorted(before) or task == "multikey"  # the asked needles keep their places' set
        if task == "multivalue":
            assert spots == sorted(spots)  # read first to last
            in_order += before == sorted(before)
            out_of_order += before != sorted(before)
        else:  # one needle per key: nothing to reorder
            assert b.input_ids.tolist() == a.input_ids.tolist()
    assert task != "multivalue" or out_of_order >= 8  # the shuffle rarely reads them in order (1 in 24)


def test_in_answer_order_moves_each_keys_needles_among_their_places():
    # places 0..6 hold needles 4, 1, 5, 0, 3, 2, 6; needles 0-3 belong to key 0, 4-5 to key 1, 6 is a distractor
    owners = [0, 0, 0, 0, 1, 1]
    assert in_answer_order([4, 1, 5, 0, 3, 2, 6], owners) == [4, 0, 5, 1, 2, 3, 6]
    assert in_answer_order([6, 0, 1, 2, 3, 4, 5], owners) == [6, 0, 1, 2, 3, 4, 5]
    assert in_answer_order([2, 6, 1, 0], [0, 0, 0]) == [0, 6, 1, 2]


def test_a_recipe_chooses_the_needle_order(tokenizer):
    recipe = recipe_from_dict({"seq_len": 900, "data": {"niah_fraction": 1.0, "niah_tasks": ["multivalue"],
                                                        "needle_order": "answer"}})
    assert recipe.data.needle_order == "answer" and SequenceSource(recipe, tokenizer, 384).niah.needle_order == "answer"
    assert recipe_from_dict({}).data.needle_order == "shuffled"
    with pytest.raises(SlconvertError, match="data.needle_order.*shuffled.*answer"):
        recipe_from_dict({"data": {"needle_order": "sideways"}})


def test_too_short_for_a_needle_is_refused(tokenizer):
    recipe = recipe_from_dict({"seq_len": 64, "data": {"niah_fraction": 1.0}})
    with pytest.raises(SlconvertError, match="too short for a 'single' needle sample"):
        SequenceSource(recipe, tokenizer, 384)


def test_stages_sample_their_own_needle_tasks(tokenizer):
    """A stage's niah_tasks replace data.niah_tasks for its steps; the length check is per stage and task."""
    curriculum = [{"seq_len": 250, "steps": 2, "niah_tasks": ["single"]}, {"seq_len": 900, "steps": 2}]
    recipe = recipe_from_dict({"batch_size": 8, "max_steps": 4, "curriculum": curriculum,
                               "data": {"niah_fraction": 1.0, "niah_tasks": ["multikey", "multivalue"]}})
    source = SequenceSource(recipe, tokenizer, 384)  # 250 tokens hold a single needle, not a multikey one
    asked, build = [], source.niah.sample
    source.niah.sample = lambda rng, seq_len, task: asked.append((seq_len, task)) or build(rng, seq_len, task)
    for step in range(6):
        for i in range(8):
            source.sample(step, i)
    assert {t for n, t in asked[:16]} == {"single"} and {n for n, t in asked[:16]} == {250}
    assert {t for n, t in asked[16:]} == {"multikey", "multivalue"} and {n for n, t in asked[16:]} == {900}
    assert recipe.to_dict()["curriculum"] == [dict(curriculum[0]), {"seq_len": 900, "steps": 2}]
    everywhere = recipe_from_dict({**recipe.to_dict(), "curriculum": [{"seq_len": 250, "steps": 2}, curriculum[1]]})
    with pytest.raises(SlconvertError, match="250 is too short for a .multikey. needle sample"):
        SequenceSource(everywhere, tokenizer, 384)


def test_a_stage_sets_its_own_batch_and_the_token_budget_follows(tokenizer):
    """A stage's batch_size / micro_batch_size replace the recipe's for its steps (the micro-batch at most the
    batch by default); tokens and sequence ordinals count each stage's own batch, so every text window of the run
    is another one."""
    curriculum = [{"seq_len": 256, "steps": 2}, {"seq_len": 512, "steps": 2, "batch_size": 8},
                  {"seq_len": 512, "steps": 1, "batch_size": 2}]
    recipe = recipe_from_dict({"batch_size": 4, "micro_batch_size": 4, "max_steps": 6, "curriculum": curriculum,
                               "data": {"niah_fraction": 0.0}})
    source = SequenceSource(recipe, tokenizer, 384)
    assert [len(samples) for _, samples in source.micro_batches(1, 0, 1)] == [4]
    assert [len(samples) for _, samples in source.micro_batches(2, 0, 1)] == [4, 4]
    assert [len(samples) for _, samples in source.micro_batches(5, 0, 1)] == [2]  # min(4, the stage's 2); runs on
    assert {len(s.input_ids) for _, samples in source.micro_batches(3, 0, 1) for s in samples} == {512}
    assert [recipe.tokens_before(s) for s in range(7)] == [0, 1024, 2048, 6144, 10240, 11264, 12288]
    assert [recipe.sequences_before(s) for s in (0, 2, 4, 6)] == [0, 8, 24, 28]
    windows = [tuple(source.sample(s, i).input_ids[:8]) for s in range(6) for i in range(recipe.batch_of(recipe.stage_at(s)))]
    assert len(set(windows)) == len(windows) == 28
    assert recipe.to_dict()["curriculum"] == curriculum
    # a recipe without a curriculum counts as before: step x batch_size sequences
    plain = recipe_from_dict({"batch_size": 8, "seq_len": 256, "max_steps": 3})
    assert [plain.tokens_before(s) for s in range(4)] == [0, 2048, 4096, 6144]
    assert plain.sequences_before(3) == 24


@pytest.mark.parametrize("stage, message", [
    ({"seq_len": 256, "steps": 2, "batch_size": 6, "micro_batch_size": 4}, r"curriculum\[0\] has batch_size 6 and "
                                                                            "micro_batch_size 4"),
    ({"seq_len": 256, "steps": 2, "batch_size": 0}, r"curriculum\[0\]\.batch_size"),
    ({"seq_len": 256, "steps": 2, "batch": 4}, r"curriculum\[0\].*batch_size: B"),
])
def test_a_stage_batch_that_cannot_work_is_one_line(stage, message):
    with pytest.raises(SlconvertError, match=message):
        recipe_from_dict({"batch_size": 8, "micro_batch_size": 4, "max_steps": 2, "curriculum": [stage]})


def test_a_task_listed_several_times_is_drawn_as_often(tokenizer):
    """niah_tasks is a list to draw from, so repeating a task weights it: [single, multivalue x 3] draws
    multivalue for about three samples in four."""
    recipe = recipe_from_dict({"batch_size": 50, "max_steps": 8, "seq_len": 900,
                               "data": {"niah_fraction": 1.0, "niah_tasks": ["single"] + ["multivalue"] * 3}})
    assert recipe.data.niah_tasks == ["single", "multivalue", "multivalue", "multivalue"]
    source = SequenceSource(recipe, tokenizer, 384)
    asked = []
    source.niah.sample = lambda rng, seq_len, task: asked.append(task)
    for step in range(8):
        for i in range(50):
            source.sample(step, i)
    assert 0.68 < asked.count("multivalue") / len(asked) < 0.82  # 400 draws of p = 0.75: sd 0.022


def test_niah_fraction_is_the_share_of_needle_samples(tokenizer):
    """data.niah_fraction of the samples are needle samples, the rest text: 0.75 gives about three in four."""
    recipe = recipe_from_dict({"batch_size": 50, "max_steps": 8, "seq_len": 300, "seed": 3,
                               "data": {"niah_fraction": 0.75, "corpus_tokens": 4096}})
    source = SequenceSource(recipe, tokenizer, 384)
    source.niah.sample = lambda rng, seq_len, task: "niah"
    kinds = [source.sample(step, i) for step in range(8) for i in range(50)]
    share = kinds.count("niah") / len(kinds)
    assert 0.68 < share < 0.82, share  # 400 draws of p = 0.75: sd 0.022


def test_text_and_jsonl_are_packed_with_eos(tmp_path, tokenizer):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    with open(tmp_path / "docs" / "b.jsonl", "w") as handle:
        for i in range(10):
            handle.write(json.dumps({"body": f"Document {i} talks about the magic number {i * 7}. " * 3}) + "\n")
    recipe = recipe_from_dict({"seq_len": 32, "batch_size": 4, "seed": 1,
                               "data": {"text": [str(tmp_path / "docs")], "jsonl_field": "body"}})
    source = SequenceSource(recipe, tokenizer, 384)
    stream = source.corpus.tokens
    eos = tokenizer.eos_token_id
    assert int((stream == eos).sum()) == 11  # one document from the .txt file, ten from the .jsonl file
    first_doc = tokenizer(("The quick brown fox jumps over the lazy dog. " * 20).strip(), add_special_tokens=False)["input_ids"]
    assert stream[: len(first_doc) + 1].tolist() == first_doc + [eos]
    windows = [tuple(source.sample(step, i).input_ids.tolist()) for step in range(3) for i in range(4)]
    assert len(set(windows)) == 12  # an epoch visits distinct windows
    for window in windows:  # every window is a contiguous slice of the stream at a multiple of seq_len
        starts = [s for s in range(0, len(stream) - 31, 32) if tuple(stream[s:s + 32].tolist()) == window]
        assert starts
    sample = source.sample(2, 3)
    assert (sample.labels == sample.input_ids).all()
    again = SequenceSource(recipe, tokenizer, 384).sample(2, 3)
    assert again.input_ids.tolist() == sample.input_ids.tolist()


def test_bad_text_inputs(tmp_path, tokenizer):
    with pytest.raises(SlconvertError, match="does not exist"):
        find_text_files([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlconvertError, match="holds no"):
        find_text_files([tmp_path / "empty"])
    (tmp_path / "x.jsonl").write_text('{"content": "hi"}\n')
    recipe = recipe_from_dict({"seq_len": 8, "data": {"text": [str(tmp_path / "x.jsonl")]}})
    with pytest.raises(SlconvertError, match=r"x.jsonl:1 has no string field 'text'"):
        SequenceSource(recipe, tokenizer, 384)
    (tmp_path / "short.txt").write_text("tiny")
    recipe = recipe_from_dict({"seq_len": 64, "data": {"text": [str(tmp_path / "short.txt")]}})
    with pytest.raises(SlconvertError, match="fewer than one sequence of 64"):
        SequenceSource(recipe, tokenizer, 384)


def test_processes_share_the_global_batch(tokenizer):
    recipe = recipe_from_dict({"seq_len": 300, "batch_size": 4, "micro_batch_size": 1, "seed": 2,
                               "data": {"niah_fraction": 0.5, "corpus_tokens": 4096}})
    source = SequenceSource(recipe, tokenizer, 384)
    whole = [s.input_ids.tolist() for _, mb in source.micro_batches(5, 0, 1) for s in mb]
    kinds = {source.sample(step, i).kind for step in range(4) for i in range(4)}
    assert kinds == {"text", "niah"}
    rank0 = [s.input_ids.tolist() for _, mb in source.micro_batches(5, 0, 2) for s in mb]
    rank1 = [s.input_ids.tolist() for _, mb in source.micro_batches(5, 1, 2) for s in mb]
    assert sorted(rank0 + rank1) == sorted(whole) and len(rank0) == len(rank1) == 2
    assert [first for first, _ in source.micro_batches(5, 1, 2)] == [1, 3]


def test_markdown_and_restructured_text_are_read_as_text(tmp_path):
    """Notes and documentation (.md, .rst) count as plain text beside .txt and .text, for training data and
    haystacks alike; JSON lines count for training data only."""
    from slconvert.tasks.haystack import FileHaystack

    for name in ("notes.md", "guide.rst", "a.txt", "b.text", "c.jsonl"):
        (tmp_path / name).write_text('{"text": "Some text."}')
    assert sorted(p.name for p in find_text_files([tmp_path])) == ["a.txt", "b.text", "c.jsonl", "guide.rst",
                                                                   "notes.md"]
    assert sorted(p.name for p in FileHaystack([tmp_path]).files) == ["a.txt", "b.text", "guide.rst", "notes.md"]


def test_text_files_are_one_list_for_training_and_evaluation(tmp_path):
    from slconvert.evaluation import perplexity
    from slconvert.tasks.haystack import FileHaystack
    from slconvert.training import data

    assert data.TEXT_SUFFIXES == DOCUMENT_SUFFIXES == (*TEXT_SUFFIXES, ".jsonl")
    assert perplexity.TEXT_SUFFIXES is TEXT_SUFFIXES
    for suffix in DOCUMENT_SUFFIXES:
        (tmp_path / f"doc{suffix}").write_text("Some text.")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    assert sorted(p.suffix for p in find_text_files([tmp_path])) == sorted(DOCUMENT_SUFFIXES)
    assert sorted(p.suffix for p in FileHaystack([tmp_path]).files) == sorted(TEXT_SUFFIXES)  # JSON lines are no haystack
    with pytest.raises(SlconvertError, match=f"haystack file {tmp_path / 'doc.jsonl'} is not a text file"):
        FileHaystack([tmp_path / "doc.jsonl"])  # named alone, it went into the prompts as it is, keys and all


def _imported_packages(folder: Path) -> set[str]:
    """The slconvert subpackages (and top-level modules) that the modules of `folder` import."""
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = (node.module or "").split(".")
                found.add(parts[0] if node.level > 1 else folder.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slconvert."):
                found.add(node.module.split(".")[1])
    return found


def test_imports_run_one_way():
    """Training and evaluation share the needle tasks through slconvert.tasks; neither imports the other, and the
    shared layer imports neither of them."""
    root = Path(slconvert.__file__).parent
    assert not _imported_packages(root / "training") & {"evaluation", "commands"}
    assert not _imported_packages(root / "evaluation") & {"training", "commands"}
    assert _imported_packages(root / "tasks") <= {"tasks", "errors", "inputs"}  # inputs: a leaf beside errors


def test_text_windows_are_aligned_slices_in_a_fresh_order_every_epoch():
    """24 tokens 0..23 in windows of 4 are the six slices [4k, 4k + 4); each epoch (ordinals 6e .. 6e + 5) visits
    every one of them once, and the order changes from epoch to epoch (ten epochs are not all one order). Two
    tokens past the last whole window (26 tokens) are never used."""
    from slconvert.training.data import TextCorpus

    corpus = TextCorpus(np.arange(26, dtype=np.int64), seed=0, description="test")
    orders = []
    for epoch in range(10):
        windows = [corpus.window(6 * epoch + i, 4).tolist() for i in range(6)]
        assert sorted(windows) == [[4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3] for k in range(6)], epoch
        orders.append(tuple(w[0] // 4 for w in windows))
    assert len(set(orders)) > 1, orders


def test_held_out_text_samples_are_not_the_first_training_batch(tokenizer):
    """eval_sample draws the run's last length in an order of its own: the held-out batch is not the sequence of
    windows the first optimizer step trains on."""
    recipe = recipe_from_dict({"seq_len": 32, "batch_size": 4, "seed": 1, "data": {"niah_fraction": 0.0,
                                                                                  "corpus_tokens": 4096}})
    source = SequenceSource(recipe, tokenizer, 384)
    trained = [source.sample(0, i).input_ids.tolist() for i in range(4)]
    held_out = [source.eval_sample(i).input_ids.tolist() for i in range(4)]
    assert held_out != trained


def test_the_question_is_worded_for_the_keys_and_values_asked(tokenizer, monkeypatch):
    """One value asked: "What is the special magic number for KEY"; two keys asked: "... numbers for A and B"
    (no comma before the "and" of two keys). No shipped task asks two keys, so one is added here."""
    from slconvert.tasks.niah import TaskSpec
    from slconvert.training import data

    monkeypatch.setitem(data.TASKS, "pair", TaskSpec(queries=2))
    pool = SentencePool(tokenizer, SyntheticHaystack(0).text(4000))
    generator = NiahGenerator(tokenizer, "builtin", pool, "words", "numbers", 384)
    one = tokenizer.decode(generator.sample(random.Random(0), 600, "single").input_ids)
    assert "What is the special magic number for " in one and "What are all" not in one
    two = tokenizer.decode(generator.sample(random.Random(0), 600, "pair").input_ids)
    assert re.search(r"What are all the special magic numbers for [a-z]+-[a-z]+ and [a-z]+-[a-z]+ mentioned", two), two


def test_a_needle_can_stand_at_either_end_of_the_haystack(tokenizer, monkeypatch):
    """Needles go at a random boundary between haystack sentences, the first and the last included: with a
    haystack of two sentences (token 7), a single needle lands right after the header (depth 0) in some of 60
    samples and right before the question (depth 100%) in others (each 1 in 3)."""
    generator = NiahGenerator(tokenizer, "builtin", None, "words", "numbers", 384)
    monkeypatch.setattr(generator, "_filler", lambda rng, n: [np.full(n // 2, 7), np.full(n - n // 2, 7)])
    header = ("Some special magic numbers are hidden within the following text. Make sure to memorize them. "
              "I will quiz you about the numbers afterwards.\n\n")
    head = 1 + len(tokenizer(header, add_special_tokens=False)["input_ids"])  # BOS + the header
    after_head = set()
    for seed in range(60):
        ids = generator.sample(random.Random(seed), 300, "single").input_ids
        after_head.add(int(ids[head]) == 7)
    assert after_head == {True, False}


def test_a_needle_only_run_needs_no_text_longer_than_a_sequence(tmp_path, tokenizer):
    """With niah_fraction 1 the user's text is only a haystack to draw sentences from (wrapping around): a file
    shorter than one sequence is enough; it would not be for text samples."""
    (tmp_path / "short.txt").write_text("The river runs. The stone sits. The cloud moves.")
    recipe = recipe_from_dict({"seq_len": 300, "data": {"niah_fraction": 1.0, "niah_haystack": "text",
                                                        "text": [str(tmp_path / "short.txt")]}})
    source = SequenceSource(recipe, tokenizer, 384)
    assert source.corpus is None and len(source.sample(0, 0).input_ids) == 300


def test_a_jsonl_record_of_whitespace_is_no_document(tmp_path):
    """A .jsonl record whose text is only whitespace adds no document (it would add an empty one between EOS
    tokens); blank lines are skipped too."""
    from slconvert.training.data import read_documents

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "  \\n "}\n\n{"text": "two"}\n')
    assert read_documents([tmp_path / "a.jsonl"], "text") == ["one", "two"]
