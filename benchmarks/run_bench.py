"""Run the attention benchmark without the CLI (for machines where only torch and Triton are installed).

    python benchmarks/run_bench.py --out DIR [--quick] [--lengths 16K,64K] [--setting released] \
        [--pass forward] [--no-million] [--budget-ms 1500] [--search-key anchor --search-key span_mean]
Same protocol and outputs as `slconvert bench` (bench.json, bench.png, a table on stdout).

`--search-key` times each setting with the given router search key(s), in the same process on the same inputs
(`BenchSettings.search_keys`): rows of setting "released" use the anchor key, rows "released span_mean" the
span-mean key (which the published kernels do not have: no published rows). E.g. the span-mean forward next to the
anchor forward at 256K:

    python benchmarks/run_bench.py --out DIR --lengths 256K --pass forward --no-million \
        --search-key anchor --search-key span_mean
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from slconvert.benchmark import BenchSettings, run_benchmark
from slconvert.benchmark.host import device_name
from slconvert.benchmark.report import format_table, plot_times, write_json

SEARCH_KEYS = ("anchor", "span_mean")


def _length(text: str) -> int:
    text = text.strip().upper()
    mult = 1024 if text.endswith("K") else (1 << 20) if text.endswith("M") else 1
    return int(text.rstrip("KM")) * mult


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-output"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lengths", default=None)
    ap.add_argument("--setting", action="append", choices=["released", "balanced"])
    ap.add_argument("--pass", dest="passes", action="append", choices=["forward", "forward_backward", "decode"])
    ap.add_argument("--no-million", action="store_true")
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--search-key", dest="search_keys", action="append", choices=SEARCH_KEYS,
                    help="router search key(s) to time each setting with (default: anchor)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: the benchmark needs a CUDA GPU and none is visible", file=sys.stderr)
        return 2
    cfg = BenchSettings()
    if args.quick:
        cfg.lengths, cfg.million, cfg.budget_ms = [16384, 32768, 65536], False, 500.0
    if args.lengths:
        cfg.lengths = [_length(x) for x in args.lengths.split(",") if x.strip()]
    if args.setting:
        cfg.settings = args.setting
    if args.passes:
        cfg.passes = args.passes
    if args.no_million:
        cfg.million = False
    if args.budget_ms is not None:
        cfg.budget_ms = args.budget_ms
    if args.search_keys:
        cfg.search_keys = list(dict.fromkeys(args.search_keys))
    print(f"GPU: {device_name()}", flush=True)
    bar = tqdm(total=len(cfg.lengths) * len(cfg.passes) + int(cfg.million), desc="bench")

    def progress(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)

    args.out.mkdir(parents=True, exist_ok=True)

    def partial_result(result: dict) -> None:
        write_json(result, args.out / "bench.json")
        # the newest row: table lines 0 and 1 are the GPU and the header, the notes follow the rows
        print("\n" + format_table(result).splitlines()[1 + len(result["rows"])], flush=True)

    result = run_benchmark(cfg, progress, partial_result)
    bar.close()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out / "bench.json")
    plot_times(result, args.out / "bench.png")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
