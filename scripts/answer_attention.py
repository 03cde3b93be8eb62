"""Where a dense model's attention looks when it writes each value of a needle answer (CPU or GPU).

For NIAH prompts with the gold answer appended (teacher forcing), each attention layer's probabilities at the
row that predicts a value's first token, averaged over heads, summed over +-3 tokens around each needle's value.
A layer that retrieves puts its mass on the needles; how many needles one row holds at once says how many spans
a Superlinear query must open to do the same (k per query). Writes JSON and prints one line per (prompt, layer).

    python scripts/answer_attention.py MODEL --task multivalue --length 2048 --samples 4 --out answer_attention.json
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
    from slconvert.tasks.niah import build_sample

    s = build_sample(tokenizer, haystack, task, length, depth, sample)
    enc = tokenizer(s.prompt + s.answer, return_offsets_mapping=True, add_special_tokens=s.special_tokens)
    offsets = enc["offset_mapping"]
    needles = [needle_token(offsets, s.prompt.index(value)) for value in s.expected]
    answers = [needle_token(offsets, len(s.prompt) + s.answer.index(value)) for value in s.expected]
    ids = torch.tensor([enc["input_ids"]], device=model.device)
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--task", default="multivalue")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--depth", type=float, default=50.0)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default="answer_attention.json")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slconvert.errors import SlconvertError
    from slconvert.tasks.haystack import load_haystack

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError) as err:
        sys.exit(f"error: cannot load {args.model} as a transformers checkpoint ({err}); give a model folder")
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    try:
        rows = [measure(model, tokenizer, load_haystack("builtin"), args.task, args.length, args.depth, sample)
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
