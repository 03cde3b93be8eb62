"""Where a dense model's attention looks when it writes each value of a needle answer (CPU or GPU).

For NIAH prompts with the gold answer appended (teacher forcing), each attention layer's probabilities at the
row that predicts a value's first token, averaged over heads, summed over +-3 tokens around each needle's value.
A layer that retrieves puts its mass on the needles; how many needles one row holds at once says how many spans
a Superlinear query must open to do the same (k per query). Writes JSON and prints one line per (prompt, layer).

With --shape, the model (a dense one) is first converted in memory at that Superlinear shape (scaled so that
W <= length / 16, as the conversion study does) and each converted layer's own dense attention at the same rows is
compared with two choices of k spans among the layer's candidates: the router's (as converted, or as trained when
MODEL is a converted checkpoint) and the best possible (the k candidates holding the most dense mass). The share
of the dense mass inside the chosen spans and the window (span recall) and the needles inside them say whether a
miss is the router's (the best choice holds the needles) or the shape's (no k spans can).

    python scripts/answer_attention.py MODEL --task multivalue --length 2048 --samples 4 --out answer_attention.json
    python scripts/answer_attention.py MODEL --shape balanced --search-key span_mean --out span_choice.json
    python scripts/answer_attention.py CONVERTED --out span_choice.json   # a converted (trained) model's own router
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def needle_token(offsets: list[tuple[int, int]], char: int) -> int:
    """The token that holds character `char` of the text."""
    return next(i for i, (_, end) in enumerate(offsets) if end > char)


def measure(model, tokenizer, haystack, task: str, length: int, depth: float, sample: int, radius: int = 3) -> dict:
    input_ids, needles, answers = _needle_rows(tokenizer, haystack, task, length, depth, sample)
    ids = torch.tensor([input_ids], device=model.device)
    with torch.no_grad():
        result = model(input_ids=ids, output_attentions=True)
    predicted = result.logits[0].argmax(-1)
    layers = []
    for probs in (a for a in result.attentions if a is not None):
        mass = [[round(float(probs[0, :, row - 1].mean(0)[max(0, n - radius): n + radius + 1].sum()), 3)
                 for n in needles] for row in answers]
        layers.append(mass)  # [value][needle]
    return {"task": task, "length": length, "depth": depth, "sample": sample, "needles_at": needles,
            "answers_at": answers, "first_token_right": [int(predicted[a - 1]) == int(ids[0, a]) for a in answers],
            "mass": layers}


def _needle_rows(tokenizer, haystack, task, length, depth, sample):
    """The prompt with its gold answer, each needle value's token, and each answer value's token."""
    from slconvert.tasks.niah import build_sample

    s = build_sample(tokenizer, haystack, task, length, depth, sample)
    enc = tokenizer(s.prompt + s.answer, return_offsets_mapping=True, add_special_tokens=s.special_tokens)
    offsets = enc["offset_mapping"]
    needles = [needle_token(offsets, s.prompt.index(value)) for value in s.expected]
    answers = [needle_token(offsets, len(s.prompt) + s.answer.index(value)) for value in s.expected]
    return enc["input_ids"], needles, answers


def span_choice(record: dict, rows: list[int], needles: list[int]) -> dict:
    """At query rows `rows` of one captured converted-layer call: span recall and needles inside, for the router's
    k spans (as the kernels select them) and for the k candidates holding the most dense mass ("best"; where
    candidate spans overlap, a union of other spans could hold slightly more), each with the window; per row, mean
    over query heads. The dense attention, the candidates' mass and the keys read are the router losses' own."""
    from slkernels import select_spans
    from slkernels.selection import candidates

    from slconvert.training.losses import candidate_mass, covered_keys, dense_probs

    q, k, cfg = record["q"], record["k"].float(), record["config"]
    batch, heads_q, _, dim = q.shape
    heads_kv = k.shape[1]
    group = heads_q // heads_kv
    index = torch.tensor(rows, device=q.device)
    pos = record["cache_position"][index]
    first = torch.zeros(batch, dtype=torch.long, device=q.device)
    probs, inside_window, _ = dense_probs(q[:, :, index].float(), k, pos, first, record.get("scale") or dim ** -0.5,
                                          cfg.window, group)
    q_search = record["q_search"][:, :, index]
    routed = select_spans(q_search, record["k"], cfg, cache_position=pos)
    cand = candidates(cfg, q_search.float().view(batch, heads_kv, group, len(rows), dim), k, pos,
                      (pos + 1)[None].expand(batch, -1), first[:, None])
    best = candidate_mass(probs, cand).topk(min(cfg.num_spans, cand.anchor.shape[-1]), dim=-1).indices
    choices = {
        "router": covered_keys(inside_window, routed.span_lo, routed.span_hi, routed.anchor >= 0),
        "best": covered_keys(inside_window, *(t[:, None].expand(-1, heads_q, -1, -1).gather(-1, best)
                                              for t in (cand.lo, cand.hi, cand.valid & (cand.hi >= cand.lo)))),
    }
    out = {}
    for name, inside in choices.items():
        recall = (probs * inside).sum(-1).mean(1)[0]  # [R]
        held = torch.stack([inside[..., n] if n < inside.shape[-1] else torch.zeros_like(inside[..., 0])
                            for n in needles], -1).float().sum(-1).mean(1)[0]
        out[name] = {"recall": [round(float(v), 3) for v in recall], "needles": [round(float(v), 2) for v in held]}
    out["window_mass"] = [round(float(v), 3) for v in (probs * inside_window).sum(-1).mean(1)[0]]
    return out


def measure_spans(model, tokenizer, haystack, task: str, length: int, depth: float, sample: int) -> dict:
    """`span_choice` at the rows that predict each answer value, for every converted layer of `model`."""
    from slconvert.attention import capture_attention

    ids, needles, answers = _needle_rows(tokenizer, haystack, task, length, depth, sample)
    rows = [a - 1 for a in answers]
    with torch.no_grad(), capture_attention(model) as records:
        model(input_ids=torch.tensor([ids], device=model.device))
    layers = {rec["layer_idx"]: span_choice(rec, rows, needles) for rec in records}
    return {"task": task, "length": length, "depth": depth, "sample": sample, "needles_at": needles,
            "answers_at": answers, "layers": layers}


def summarize_spans(rows: list[dict]) -> dict:
    """Per converted layer, the means over every (prompt, answer row) of `measure_spans`' rows."""
    out: dict = {}
    for row in rows:
        for layer, choice in row["layers"].items():
            entry = out.setdefault(str(layer), {"router": [], "best": [], "window": [], "router_needles": [],
                                                "best_needles": []})
            entry["router"] += choice["router"]["recall"]
            entry["best"] += choice["best"]["recall"]
            entry["window"] += choice["window_mass"]
            entry["router_needles"] += choice["router"]["needles"]
            entry["best_needles"] += choice["best"]["needles"]
    return {layer: {key: round(sum(v) / len(v), 3) for key, v in entry.items()} for layer, entry in out.items()}


def plot_spans(summary: dict, title: str, path: Path) -> None:
    """Bars per converted layer: span recall of the router's k spans, of the best k spans, of the window alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(summary)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(layers), 3.8))
    for i, (key, label) in enumerate((("window", "window alone"), ("router", "router's k spans + window"),
                                      ("best", "best k spans + window"))):
        ax.bar([j + (i - 1) * 0.27 for j in range(len(layers))], [summary[layer][key] for layer in layers], 0.27, label=label)
    ax.set_xticks(range(len(layers)), [f"layer {layer}" for layer in layers])
    ax.set_ylim(0, 1)
    ax.set_ylabel("dense attention mass inside (span recall)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", default="multivalue")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--depth", type=float, default=50.0)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default="answer_attention.json")
    parser.add_argument("--shape", choices=["balanced", "released"], default=None,
                        help="convert the dense MODEL in memory at this shape and compare span choices")
    parser.add_argument("--search-key", choices=["anchor", "span_mean"], default="span_mean",
                        help="with --shape; a converted MODEL is measured with its own key and router")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slconvert.errors import SlconvertError
    from slconvert.loading import is_converted, load
    from slconvert.tasks.haystack import load_haystack

    device = "cuda" if torch.cuda.is_available() else "cpu"
    converted = is_converted(args.model)
    if converted and args.shape:
        sys.exit(f"error: {args.model} is already converted; leave out --shape (its own spans are measured)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        if converted:
            model = load(args.model, device=device, dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError, SlconvertError) as err:
        sys.exit(f"error: cannot load {args.model} as a transformers checkpoint ({err}); give a model folder")
    model = model.to(device).eval()
    haystack = load_haystack("builtin")
    if args.shape or converted:
        try:
            if converted:
                block = model.config.superlinear
            else:
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                from conversion_study import SHAPES  # the study's shapes: the two measure the same conversion
                from slkernels import SuperlinearConfig

                from slconvert.benchmark.model import convert_in_memory

                block = convert_in_memory(model, SuperlinearConfig(**SHAPES[args.shape], search_key=args.search_key))
            rows = [measure_spans(model, tokenizer, haystack, args.task, args.length, args.depth, sample)
                    for sample in range(args.samples)]
        except SlconvertError as err:
            sys.exit(f"error: {err}")
        for row in rows:
            for layer, choice in row["layers"].items():
                print(f"sample {row['sample']} layer {layer}: recall router {choice['router']['recall']} best "
                      f"{choice['best']['recall']} window {choice['window_mass']}; needles inside router "
                      f"{choice['router']['needles']} best {choice['best']['needles']}")
        summary = summarize_spans(rows)
        key = block["params"].get("search_key", "anchor")
        shape = args.shape or "as converted"
        print(f"means per layer: {summary}")
        Path(args.out).write_text(json.dumps({"model": str(args.model), "task": args.task, "length": args.length,
                                              "depth": args.depth, "shape": shape, "search_key": key,
                                              "window": block["window"], "summary": summary, "rows": rows},
                                             indent=1) + "\n")
        png = Path(args.out).with_suffix(".png")
        plot_spans(summary, f"{args.task} at {args.length} tokens, {shape} (W = {block['window']}), {key} key, "
                            "answer rows", png)
        print(f"wrote {args.out} and {png}")
        return
    try:
        rows = [measure(model, tokenizer, haystack, args.task, args.length, args.depth, sample)
                for sample in range(args.samples)]
    except SlconvertError as err:
        sys.exit(f"error: {err}")
    for row in rows:
        for layer, mass in enumerate(row["mass"]):
            held = [sum(m > 0.1 for m in per_value) for per_value in mass]
            print(f"sample {row['sample']} attention layer {layer}: needles holding > 0.1 of a row's mass, per "
                  f"value: {held}; mass {mass}")
    Path(args.out).write_text(json.dumps({"model": str(args.model), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
