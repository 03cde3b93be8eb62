"""One released decode row at 16K, 64K and 1M (graph replays): search, partial + combine, whole step and dense SDPA,
then partial + combine under each COMBINE_TILE of VARIANTS["decode combine"] (the other sweeps of
`profile_passes.py --decode` left out). Run from the repository root."""
import sys

from slkernels import SuperlinearConfig

sys.path.insert(0, "benchmarks")
import profile_passes as pp  # noqa: E402

pp.VARIANTS.update({"decode": [], "decode search": [], "decode search tile": [], "decode pdl": []})
for length in (16384, 65536, 1 << 20):
    pp.profile_decode("released", SuperlinearConfig.released(), length)
