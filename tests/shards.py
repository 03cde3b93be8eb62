"""`pytest --shard K/N`: the K-th of N interleaved parts of the collected tests (every N-th test from the K-th), so that
a test file longer than one command may run (the GPU tests on a device machine with a per-command limit) runs as N
commands of about equal length: neighbouring tests, which tend to cost alike, fall in different parts."""

from __future__ import annotations


def parse(spec: str) -> tuple[int, int]:
    """(K, N) of "K/N"; ValueError with one line naming the fix otherwise."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise ValueError(f"--shard {spec}: use K/N with 1 <= K <= N, e.g. --shard 1/2")
    return k, n


def split(items: list, spec: str) -> tuple[list, list]:
    """(kept, left out) of `items` for the part `spec`."""
    k, n = parse(spec)
    return [x for i, x in enumerate(items) if i % n == k - 1], [x for i, x in enumerate(items) if i % n != k - 1]
