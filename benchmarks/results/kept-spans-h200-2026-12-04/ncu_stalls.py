"""Warp-stall samples of one Nsight Compute source page (``ncu --import R --page source --csv --print-source sass``,
here gzipped), per reason over the whole kernel and per partition of a warp-specialised kernel, and the instructions
with the most samples.

    python ncu_stalls.py FILE.csv.gz [START:END:NAME ...] [--top N]

START and END are SASS offsets (hex, the low 20 bits of the address) of a partition's code, e.g. between the
``USETMAXREG`` instructions that open each partition.
"""
import collections
import csv
import gzip
import sys

args = sys.argv[1:]
top = 25
if "--top" in args:
    i = args.index("--top")
    top = int(args[i + 1])
    args = args[:i] + args[i + 2:]
path, regions = args[0], [x.split(":") for x in args[1:]]
rows = list(csv.reader(gzip.open(path, "rt") if path.endswith(".gz") else open(path)))
hdr, data = rows[1], rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
stalls = [h for h in hdr if h.startswith("stall_") and "(Not Issued)" not in h]
SAMPLES = "Warp Stall Sampling (All Samples)"


def count(r, key):
    v = r[ix[key]]
    return int(v) if v not in ("", "-") else 0


def breakdown(sel):
    n = sum(count(r, SAMPLES) for r in sel)
    agg = collections.Counter({s: sum(count(r, s) for r in sel) for s in stalls})
    return n, ", ".join(f"{s[6:]} {100 * v / max(n, 1):.1f}%" for s, v in agg.most_common(8))


total, line = breakdown(data)
print(f"all: {total} samples; {line}")
for start, end, name in regions:
    sel = [r for r in data if int(start, 16) <= (int(r[0], 16) & 0xFFFFF) < int(end, 16)]
    n, line = breakdown(sel)
    print(f"{name}: {100 * n / total:.1f}% of samples; {line}")
for r in sorted(data, key=lambda r: -count(r, SAMPLES))[:top]:
    reasons = sorted(((count(r, s), s) for s in stalls), reverse=True)[:2]
    print(f"{int(r[0], 16) & 0xFFFFF:05x} {100 * count(r, SAMPLES) / total:5.1f}% {r[1].strip()[:56]:56} "
          + " ".join(f"{s[6:]}={v}" for v, s in reasons if v))
