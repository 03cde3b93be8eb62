"""Models whose needle answers are known: one copies every asked needle's value, one never answers.

They stand in for a causal LM wherever the evaluation runs one: `slconvert.evaluation.models.greedy_generate`
(our NIAH grid: forward passes through a cache) and lm-eval's HFLM (`generate`). The answer is read from the
prompt text itself: the keys named by the question, then the values of the needles for those keys (or the
pass key), so a correct scorer must give the copying model 1.0 and the silent one 0.0 on any prompt style.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

_QUESTION = re.compile(r"special magic \w+ for (.+?) mentioned in the provided text")
# The end of a prompt: the answer prefix after the question (a needle may also say "The pass key is").
_PROMPT_END = re.compile(r"(mentioned in the provided text (is|are)|pass keys?\?.*The pass keys? (is|are))\s*$", re.DOTALL)
_PASSKEY = re.compile(r"The pass key is ([^\s.]+)\. Remember it\.")


def needle_answer(prompt: str) -> list[str]:
    """The values a perfect reader of `prompt` would answer, in the order their needles appear."""
    asked = _QUESTION.findall(prompt)
    if not asked:
        return _PASSKEY.findall(prompt)
    keys = [k for k in re.split(r",\s*(?:and\s+)?|\s+and\s+", asked[-1]) if k]
    pattern = re.compile(r"One of the special magic \w+ for (" + "|".join(map(re.escape, keys)) + r") is: ([^\s.]+)\.")
    return [value for _, value in pattern.findall(prompt)]


class NeedleOracle(torch.nn.Module):
    """behaviour "copy": answers " v1, v2, ..." then end of sequence; "never": ends the sequence at once."""

    def __init__(self, tokenizer, config, behaviour: str = "copy"):
        super().__init__()
        assert behaviour in ("copy", "never")
        self.tokenizer, self.config, self.behaviour = tokenizer, config, behaviour
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the helpers a device and a dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def answer_ids(self, prompt_ids: list[int]) -> list[int]:
        eos = [self.tokenizer.eos_token_id]
        if self.behaviour == "never":
            return eos
        values = needle_answer(self.tokenizer.decode(prompt_ids, skip_special_tokens=True))
        return self.tokenizer(" " + ", ".join(values), add_special_tokens=False)["input_ids"] + eos

    def forward(self, input_ids, past_key_values=None, use_cache=False, logits_to_keep=0, **_):
        """Next-token logits as one-hot rows; the "cache" holds, per batch row, the tokens seen and where the prompt
        ended."""
        states = past_key_values or [{"ids": [], "prompt": None, "answer": None} for _ in range(input_ids.shape[0])]
        steps = input_ids.shape[1] if not logits_to_keep else min(logits_to_keep, input_ids.shape[1])
        logits = torch.zeros(input_ids.shape[0], steps, len(self.tokenizer))
        for row, state in enumerate(states):
            state["ids"] = state["ids"] + input_ids[row].tolist()
            if state["prompt"] is None and _PROMPT_END.search(self.tokenizer.decode(state["ids"],
                                                                                    skip_special_tokens=True)):
                state["prompt"] = len(state["ids"])
                state["answer"] = self.answer_ids(state["ids"])
            if state["prompt"] is not None:
                made = len(state["ids"]) - state["prompt"]
                answer = state["answer"]
                logits[row, -1, answer[min(made, len(answer) - 1)]] = 1.0
        return SimpleNamespace(logits=logits, past_key_values=states)

    def tie_weights(self) -> None:  # lm-eval's HFLM calls it on the model it is given
        pass

    @torch.no_grad()
    def generate(self, input_ids, max_length=None, attention_mask=None, **_):
        """What HF's generate returns: each row's prompt followed by its answer (left padding kept)."""
        rows = []
        for i, row in enumerate(input_ids.tolist()):
            prompt = row if attention_mask is None else [t for t, m in zip(row, attention_mask[i].tolist()) if m]
            rows.append(row + self.answer_ids(prompt))
        width = max(len(r) for r in rows)
        if max_length is not None:
            width = min(width, max_length)
        pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        return torch.tensor([(r + [pad] * width)[:width] for r in rows], device=self.device)


def oracle_model(path: Path, behaviour: str, *, max_length: int | None = None):
    """An `EvalModel` around NeedleOracle with the tokenizer and config of the checkpoint at `path`."""
    from transformers import AutoConfig, AutoTokenizer

    from slconvert.evaluation.models import EvalModel, config_max_length

    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    return EvalModel(name=f"{behaviour}-oracle", path=Path(path), model=NeedleOracle(tokenizer, config, behaviour),
                     tokenizer=tokenizer, converted=False, max_length=max_length or config_max_length(config))
