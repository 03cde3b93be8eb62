"""The attention benchmark of docs/semantics.md: Superlinear kernels against dense SDPA, same process, same GPU."""

from .protocol import BenchSettings, run_benchmark

__all__ = ["BenchSettings", "run_benchmark"]
