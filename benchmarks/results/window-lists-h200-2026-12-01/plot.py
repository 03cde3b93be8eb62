"""forward.png: speedup over dense SDPA of the released forward (no gradient), before (af61a32, torch window entries)
and after (one-pass window lists), two runs each of call 4, one H200; and the forward+backward of call 5."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).parent


def rows(name, pass_name):
    data = json.loads((HERE / name).read_text())
    return {r["length"]: r["speedup"] for r in data["rows"] if r["pass"] == pass_name and r["setting"] == "released"}


fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for label, name, style in (("before, run 1", "forward-old.json", "o--"), ("before, run 2", "forward-old2.json", "s--"),
                           ("after, run 1", "forward-new.json", "o-"), ("after, run 2", "forward-new2.json", "s-")):
    r = rows(name, "forward")
    axes[0].plot(list(r), list(r.values()), style, label=label)
for label, name, style in (("before", "fb-old.json", "o--"), ("after", "fb-new.json", "o-")):
    r = rows(name, "forward_backward")
    axes[1].plot(list(r), list(r.values()), style, label=label)
for ax, title in zip(axes, ("forward, no gradient (call 4)", "forward + backward (call 5)")):
    ax.set_xscale("log", base=2)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("tokens")
    ax.set_ylabel("speedup over dense SDPA")
    ax.set_title(f"released, B=1, 32/2 heads, D=128, bf16: {title}", fontsize=9)
    ax.legend(fontsize=8)
fig.tight_layout()
out = HERE / "forward.png"
fig.savefig(out, dpi=110)
Image.open(out).convert("RGB").quantize(256).save(out)
