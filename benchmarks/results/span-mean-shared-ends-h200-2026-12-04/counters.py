"""Collect call 2's Nsight Compute details (search-details.txt) into counters.json: per search (key, order) the
duration, DRAM and L2 bytes, hit rates, throughputs against peak, occupancy and the main stalls.

    python counters.py DIR   # DIR holds search-details.txt and card-call2.txt; writes counters.json there
"""

import json
import re
import sys
from pathlib import Path

# The order ncu_search.py launches the searches in.
NAMES = [("anchor", "rows"), ("anchor", "chains"), ("span_mean hi-only", "rows"), ("span_mean hi-only", "chains"),
         ("span_mean", "rows"), ("span_mean", "chains")]
FIELDS = {
    "ms": "Duration", "dram_read_gb": "dram__bytes_read.sum", "l2_gb": "lts__t_bytes.sum",
    "l2_hit_pct": "lts__t_sector_hit_rate.pct", "l1_gb": "l1tex__t_bytes.sum",
    "dram_pct_of_peak": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "l2_pct_of_peak": "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    "l1_pct_of_peak": "l1tex__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm_pct_of_peak": "Compute (SM) Throughput", "registers": "Registers Per Thread",
    "theoretical_occupancy_pct": "Theoretical Occupancy", "achieved_occupancy_pct": "Achieved Occupancy",
    "cycles_per_issue": "Warp Cycles Per Issued Instruction", "stall_long_scoreboard": "Stall Long Scoreboard",
    "stall_wait": "Stall Wait", "stall_short_scoreboard": "Stall Short Scoreboard",
}


def main(folder: Path) -> None:
    text = (folder / "search-details.txt").read_text()
    blocks = re.split(r"\n  _search_kernel", text)[1:]
    rows = []
    for (key, order), block in zip(NAMES, blocks):
        row = {"key": key, "order": order}
        for name, label in FIELDS.items():
            found = re.search(re.escape(label) + r"\s+\S*\s+([\d.,]+)\n", block)
            row[name] = float(found.group(1).replace(",", "")) if found else None
        rows.append(row)
    card = (folder / "card-call2.txt").read_text().strip()
    (folder / "counters.json").write_text(json.dumps({"card": card, "rows": rows}, indent=1) + "\n")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
