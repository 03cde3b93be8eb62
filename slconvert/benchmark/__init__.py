"""The attention benchmark of SPEC.md: Superlinear kernels against dense SDPA, same process, same GPU."""

from .protocol import BenchSettings, run_benchmark

__all__ = ["BenchSettings", "run_benchmark"]
