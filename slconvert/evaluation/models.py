"""Loading a model to evaluate (converted or source checkpoint) and the few forward helpers all modes share.

Every evaluation mode needs the same three things: the model in eval mode on the chosen device, its
tokenizer, and an honest context limit (the one the user gave, else the one in the config) so that
over-long inputs are refused or skipped instead of silently cut.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch

from ..devices import resolve_device
from ..dtypes import resolve_dtype
from ..errors import SlconvertError

__all__ = ["EvalModel", "check_eval_checkpoint", "load_eval_model", "cache_keyword", "forward", "last_logits",
           "greedy_generate"]

@dataclass
class EvalModel:
    """A loaded model with what the evaluation needs to know about it."""

    name: str
    path: Path
    model: torch.nn.Module
    tokenizer: object
    converted: bool
    max_length: int | None  # tokens the model may see (prompt + generated); None = unknown, no limit

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "converted": self.converted,
                "max_length": self.max_length, "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                "device": str(self.device), "model_type": getattr(self.model.config, "model_type", None)}


def config_max_length(config) -> int | None:
    """The context length a checkpoint declares (max_position_embeddings or alike), if any. `config`: a loaded
    model's config, or config.json read as a dict. A declared length of 0 or less is refused in one line: no
    prompt fits it, and nothing could say which limit was meant."""

    def field(cfg, name: str):
        return cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)

    for cfg in (field(config, "text_config"), config):
        if cfg is None:
            continue
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            value = field(cfg, attr)
            if isinstance(value, int) and not isinstance(value, bool):
                if value <= 0:
                    raise SlconvertError(f"config.json's {attr} is {value}, not a context length; set it to the "
                                         "model's context length (or give `slconvert eval` --max-length)")
                return value
    return None


def check_eval_checkpoint(path, max_length: int | None = None, *, chat: bool = False) -> int | None:
    """What `load_eval_model` checks before it reads any weights (a checkpoint directory, its config.json, its
    safetensors headers; with `chat`, a tokenizer whose chat template the NIAH prompts can use), for a command to
    make on every model it compares before the first one loads; returns the context limit known from the files
    alone: `max_length` when given, else what config.json declares (None when it declares none: the loaded model's
    config may still give a default)."""
    from ..checkpoint import check_checkpoint, read_config

    check_checkpoint(path)
    if chat:
        from ..loading import load_tokenizer
        from ..tasks.niah import chat_wrapper

        chat_wrapper(load_tokenizer(path))
    return max_length if max_length is not None else config_max_length(read_config(path))


def _is_converted(path: Path) -> bool:
    try:
        from ..loading import is_converted
    except ImportError:  # model surgery not installed in this tree: only source checkpoints can be read
        return False
    return bool(is_converted(path))


def load_eval_model(path, *, device=None, dtype=None, max_length: int | None = None) -> EvalModel:
    """Load a checkpoint directory: through `slconvert.load` when converted, else transformers as is."""
    from ..checkpoint import check_checkpoint, checkpoint_path

    path = checkpoint_path(path)
    dev = resolve_device(device)  # a device this machine lacks is refused before anything is read
    torch_dtype = resolve_dtype(dtype)
    check_checkpoint(path)  # safetensors only, headers and sizes checked, for the source as for the converted
    from ..loading import load_tokenizer

    tokenizer = load_tokenizer(path)  # before the weights: a checkpoint without one fails in seconds
    converted = _is_converted(path)
    if converted:
        from ..loading import load

        model = load(path, device=dev, dtype=torch_dtype)
    else:
        from ..loading import load_pretrained

        model = load_pretrained(path, dtype=torch_dtype).to(dev)
    model.eval()
    limit = max_length if max_length is not None else config_max_length(model.config)
    if limit is not None and limit < 1:
        raise SlconvertError(f"max length {limit} must be a positive number of tokens")
    return EvalModel(name=path.name, path=path, model=model, tokenizer=tokenizer, converted=converted,
                     max_length=limit)


def cache_keyword(model) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; support both spellings."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@torch.no_grad()
def forward(model, input_ids: torch.Tensor, *, cache=None, use_cache: bool = False, logits_to_keep: int = 0):
    """One forward pass returning (logits, cache) whatever the installed transformers calls the cache.

    logits_to_keep > 0 asks for the last positions' logits only, where the model supports it (a full
    [L, vocab] logits tensor at 128K tokens would not fit in memory).
    """
    kwargs = {"input_ids": input_ids, "use_cache": use_cache}
    if cache is not None:
        kwargs[cache_keyword(model)] = cache
    if logits_to_keep and _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = logits_to_keep
    out = model(**kwargs)
    # transformers 5's outputs name it `cache` (their `past_key_values` is a property that logs a deprecation)
    new_cache = out.cache if hasattr(out, "cache") else getattr(out, "past_key_values", None)
    logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits
    return logits, new_cache


def _prompts(input_ids) -> tuple[list[list[int]], bool]:
    """(prompts, batched): one prompt (a list of ids) or several of one length (a list of such lists)."""
    batched = bool(input_ids) and not isinstance(input_ids[0], int)
    prompts = [list(p) for p in input_ids] if batched else [list(input_ids)]
    if len({len(p) for p in prompts}) > 1:
        raise ValueError(f"prompts of one batch must have one length, got {sorted({len(p) for p in prompts})}")
    return prompts, batched


@torch.no_grad()
def last_logits(model, input_ids, keep: int, *, chunk: int | None = None):
    """Logits of the last `keep` positions, prefilling in chunks through the cache when `chunk` is set.

    `input_ids`: one prompt, or a batch of prompts of one length (no padding needed). Returns (logits
    [keep, vocab], or [B, keep, vocab] for a batch, and the cache). Chunked and whole prefill agree (tested), so
    long prompts cost bounded activation memory.
    """
    device = next(model.parameters()).device
    prompts, batched = _prompts(input_ids)
    ids = torch.tensor(prompts, device=device)
    length = ids.shape[1]
    chunk = chunk or length
    cache, pieces = None, []
    for start in range(0, length, chunk):
        piece = ids[:, start:start + chunk]
        remaining = length - start - piece.shape[1]  # positions after this chunk
        want = max(0, min(piece.shape[1], keep - remaining))
        logits, cache = forward(model, piece, cache=cache, use_cache=True, logits_to_keep=want or 1)
        if want:
            pieces.append(logits[:, -want:])
    logits = torch.cat(pieces, dim=1)
    return (logits if batched else logits[0]), cache


@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None, *,
                    prefill_chunk: int | None = None):
    """Greedy decoding with the KV / recurrent cache: prefill (chunked if asked), then one token at a time.

    `input_ids`: one prompt, or a batch of prompts of one length, decoded side by side (`max_new_tokens` then a
    number or one per prompt); a prompt stops at its budget or an end token, the batch when all have. Returns the
    new tokens (a list, or one list per prompt).
    """
    device = next(model.parameters()).device
    prompts, batched = _prompts(input_ids)
    budgets = list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * len(prompts)
    stops = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]) - {None}
    logits, cache = last_logits(model, prompts, 1, chunk=prefill_chunk)  # [B, 1, vocab]
    outs: list[list[int]] = [[] for _ in prompts]
    done = [budget <= 0 for budget in budgets]
    for _ in range(max(budgets, default=0)):
        tokens = logits[:, -1].argmax(-1).tolist()
        if len(tokens) != len(prompts):
            raise ValueError(f"the model returned {len(tokens)} rows of logits for a batch of {len(prompts)} prompts")
        for i, token in enumerate(tokens):
            if not done[i]:
                outs[i].append(token)
                done[i] = token in stops or len(outs[i]) >= budgets[i]
        if all(done):
            break
        logits, cache = forward(model, torch.tensor([[t] for t in tokens], device=device), cache=cache,
                                use_cache=True)
    return outs if batched else outs[0]
