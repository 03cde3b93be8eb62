"""`pytest --shard K/N` (tests/shards.py): N parts that together hold every collected test once, interleaved, and a
bad spec as one usage line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import shards


def test_parts_hold_every_test_once_interleaved():
    items = list(range(11))
    parts = [shards.split(items, f"{k}/3") for k in (1, 2, 3)]
    assert [kept for kept, _ in parts] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert all(sorted(kept + left) == items for kept, left in parts)
    assert shards.split(items, "1/1") == (items, [])


@pytest.mark.parametrize("spec", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_a_bad_spec_is_one_line_naming_the_fix(spec):
    with pytest.raises(ValueError, match=r"^--shard .*: use K/N with 1 <= K <= N, e.g. --shard 1/2$"):
        shards.parse(spec)


def test_pytest_collects_only_its_part_and_refuses_a_bad_spec():
    here = Path(__file__).resolve().parent

    def collect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                               str(here / "test_shards.py")], capture_output=True, text=True, cwd=here)

    def ids(run: subprocess.CompletedProcess) -> list[str]:
        assert run.returncode == 0, run.stdout + run.stderr
        return [line for line in run.stdout.splitlines() if "::" in line]

    every = ids(collect())
    assert len(every) == 8 and ids(collect("--shard", "2/3")) == every[1::3]
    bad = collect("--shard", "3/2")
    assert bad.returncode != 0 and "--shard 3/2: use K/N with 1 <= K <= N" in bad.stderr, bad.stderr
