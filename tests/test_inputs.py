"""A file the user names is text or one line (`slconvert.inputs.read_user_text`), wherever it is read: recipes,
training data, documents to score, haystacks and RULER essays."""

from __future__ import annotations

import json

import pytest

from slconvert.errors import SlconvertError
from slconvert.evaluation.lmeval import ruler_essay_haystack
from slconvert.evaluation.perplexity import load_documents
from slconvert.inputs import read_user_text
from slconvert.tasks.haystack import FileHaystack
from slconvert.training.data import read_documents

LATIN1 = "Caf\xe9 au lait, na\xefve r\xe9sum\xe9.\n".encode("latin-1")  # byte 3 is no UTF-8


def test_utf8_text_is_read_whole(tmp_path):
    (tmp_path / "a.txt").write_text("line one\nline \u2028two\n", encoding="utf-8")
    assert read_user_text(tmp_path / "a.txt", "data file", "fix it") == "line one\nline \u2028two\n"


@pytest.mark.parametrize("content, message", [
    (LATIN1, "data file {path} is not UTF-8 text (byte 3); fix it"),
    (b"text\x00\x00more", "data file {path} is not text (it holds NUL bytes); fix it"),
])
def test_bytes_that_are_not_text_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "a.txt"
    path.write_bytes(content)
    with pytest.raises(SlconvertError) as err:
        read_user_text(path, "data file", "fix it")
    assert str(err.value) == message.format(path=path)


def test_a_folder_is_one_line(tmp_path):
    with pytest.raises(SlconvertError, match=f"^{tmp_path} cannot be read"):
        read_user_text(tmp_path, "", "fix it")


@pytest.mark.parametrize("reader, name", [
    (lambda p: read_documents([p], "text"), "data file"),
    (lambda p: load_documents(p), ""),
    (lambda p: FileHaystack([p]), "haystack file"),
    (lambda p: ruler_essay_haystack(p.parent).__enter__(), "essay file"),  # reads the folder on entering
])
def test_every_reader_refuses_a_file_in_another_encoding(tmp_path, reader, name):
    path = tmp_path / "essay.txt"
    path.write_bytes(LATIN1)
    with pytest.raises(SlconvertError) as err:
        reader(path)
    assert str(err.value).startswith(f"{name} {path} is not UTF-8 text (byte 3)".strip())


@pytest.mark.parametrize("reader", [
    lambda p: read_documents([p], "text"),
    lambda p: [text for _, text in load_documents(p)],
])
def test_a_jsonl_record_holding_a_line_separator_stays_one_record(tmp_path, reader):
    """JSON lines end at a newline only: a raw U+2028 inside a string is text, not a line break."""
    path = tmp_path / "docs.jsonl"
    records = ["first\u2028still first", "second"]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in records), encoding="utf-8")
    assert reader(path) == records
