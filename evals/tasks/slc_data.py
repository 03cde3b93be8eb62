"""Local data for the shipped offline lm-eval tasks: built in memory from a seed, no download.

lm-eval calls these through `custom_dataset: !function slc_data.<name>` with the task metadata as
keyword arguments (on the command line, `--model_args` and `--metadata` are merged into it):

- ``tokenizer`` or ``pretrained``: checkpoint folder whose tokenizer sets the exact prompt lengths;
- ``max_seq_lengths``: prompt lengths in tokens (default 1024, 2048, 4096);
- ``num_samples``: prompts per length (default 10); ``seed`` (default 0);
- ``distractor_kind`` (slc_multikey): value kind of the distractor needles, "words" (default) or "numbers";
- ``doc_chars`` / ``num_docs``: size and count of the perplexity documents.

The documents themselves come from `slconvert.tasks.documents`, next to the needle prompts of
`slconvert eval --niah` and the needle format the training recipes use; this file only adapts them to lm-eval.
"""

from __future__ import annotations

import datasets

from slconvert.tasks.documents import long_documents as _long_documents
from slconvert.tasks.documents import needle_documents
from slconvert.tasks.niah import score_generation

DEFAULT_LENGTHS = (1024, 2048, 4096)


def _tokenizer(kwargs):
    from transformers import AutoTokenizer

    source = kwargs.get("tokenizer") or kwargs.get("pretrained")
    if not isinstance(source, str) or not source:
        raise ValueError("slc_* needle tasks need the tokenizer to size prompts exactly: pass "
                         "--model_args pretrained=PATH or --metadata '{\"tokenizer\": \"PATH\"}'")
    return AutoTokenizer.from_pretrained(source)


def _lengths(kwargs) -> list[int]:
    lengths = kwargs.get("max_seq_lengths", DEFAULT_LENGTHS)
    if isinstance(lengths, (int, str)):
        lengths = [int(x) for x in str(lengths).replace(",", " ").split()]
    return [int(x) for x in lengths]


def _needles(name: str, kwargs) -> dict:
    rows = needle_documents(_tokenizer(kwargs), name, _lengths(kwargs), int(kwargs.get("num_samples", 10)),
                            int(kwargs.get("seed", 0)), distractor_kind=kwargs.get("distractor_kind"))
    return {"test": datasets.Dataset.from_list(rows)}


def single(**kwargs):
    """One key-value needle in the built-in varied-sentence haystack (`slconvert eval --niah --niah-style slconvert`)."""
    return _needles("single", kwargs)


def passkey(**kwargs):
    """One 7-digit value in the repeated pass-key filler, at evenly spread depths."""
    return _needles("passkey", kwargs)


def multikey(**kwargs):
    """One asked key among three distractor needles (word values unless `distractor_kind` says otherwise)."""
    return _needles("multikey", kwargs)


def long_documents(**kwargs):
    """Long pseudo-English documents for rolling perplexity (lm-eval windows them at max_length)."""
    rows = _long_documents(int(kwargs.get("doc_chars", 32000)), int(kwargs.get("num_docs", 8)))
    return {"test": datasets.Dataset.from_list(rows)}


def process_needles(doc, results):
    """RULER-style string match: share of the expected values found in the greedy answer."""
    return {"exact_match": score_generation(results[0], doc["outputs"])}


def main(argv=None) -> None:
    """Write the generated data as JSONL to look at: python evals/tasks/slc_data.py --tokenizer PATH --out DIR."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tokenizer", required=True, help="checkpoint folder with the tokenizer")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    kwargs = {"tokenizer": args.tokenizer, "max_seq_lengths": _lengths({"max_seq_lengths": args.lengths}),
              "num_samples": args.num_samples, "seed": args.seed}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, builder in (("single", single), ("passkey", passkey), ("multikey", multikey),
                          ("long_documents", long_documents)):
        rows = builder(**kwargs)["test"]
        with (args.out / f"{name}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        print(f"{name}: {len(rows)} rows -> {args.out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
