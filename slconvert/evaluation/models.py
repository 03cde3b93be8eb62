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

from ..dtypes import resolve_dtype
from ..errors import SlconvertError

__all__ = ["EvalModel", "load_eval_model", "resolve_device", "cache_keyword", "forward", "last_logits", "greedy_generate"]

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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SlconvertError(f"device {device} was asked for but CUDA is not available; use --device cpu")
    return dev


def config_max_length(config) -> int | None:
    """The context length a checkpoint declares (max_position_embeddings or alike), if any."""
    for cfg in (getattr(config, "text_config", None), config):
        if cfg is None:
            continue
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _is_converted(path: Path) -> bool:
    try:
        from ..loading import is_converted
    except ImportError:  # model surgery not installed in this tree: only source checkpoints can be read
        return False
    return bool(is_converted(path))


def load_eval_model(path, *, device=None, dtype=None, max_length: int | None = None) -> EvalModel:
    """Load a checkpoint directory: through `slconvert.load` when converted, else transformers as is."""
    from ..checkpoint import check_checkpoint

    path = Path(path).expanduser()
    check_checkpoint(path)  # safetensors only, headers and sizes checked, for the source as for the converted
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = _is_converted(path)
    if converted:
        from ..loading import load

        model = load(path, device=dev, dtype=torch_dtype)
    else:
        kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False,
                                                     **kwargs).to(dev)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise SlconvertError(f"no usable tokenizer in {path} ({type(err).__name__}); save the tokenizer next to "
                             "the model with tokenizer.save_pretrained") from err
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
    new_cache = getattr(out, "cache", None)
    if new_cache is None:
        new_cache = getattr(out, "past_key_values", None)
    logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits
    return logits, new_cache


@torch.no_grad()
def last_logits(model, input_ids: list[int], keep: int, *, chunk: int | None = None):
    """Logits of the last `keep` positions, prefilling in chunks through the cache when `chunk` is set.

    Returns (logits [keep, vocab], cache). Chunked and whole prefill agree (tested), so long prompts
    cost bounded activation memory.
    """
    device = next(model.parameters()).device
    chunk = chunk or len(input_ids)
    cache, pieces = None, []
    for start in range(0, len(input_ids), chunk):
        piece = input_ids[start:start + chunk]
        remaining = len(input_ids) - start - len(piece)  # positions after this chunk
        want = max(0, min(len(piece), keep - remaining))
        logits, cache = forward(model, torch.tensor([piece], device=device), cache=cache, use_cache=True,
                                logits_to_keep=want or 1)
        if want:
            pieces.append(logits[0, -want:])
    return torch.cat(pieces, dim=0), cache


@torch.no_grad()
def greedy_generate(model, input_ids: list[int], max_new_tokens: int, eos_token_id=None, *,
                    prefill_chunk: int | None = None) -> list[int]:
    """Greedy decoding with the KV / recurrent cache: prefill (chunked if asked), then one token at a time."""
    device = next(model.parameters()).device
    logits, cache = last_logits(model, input_ids, 1, chunk=prefill_chunk)
    out: list[int] = []
    stops = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]) - {None}
    for _ in range(max_new_tokens):
        token = int(logits[-1].argmax())
        out.append(token)
        if token in stops:
            break
        step, cache = forward(model, torch.tensor([[token]], device=device), cache=cache, use_cache=True)
        logits = step[0]
    return out
