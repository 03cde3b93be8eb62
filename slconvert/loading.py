"""`slconvert.load`: a converted checkpoint as a transformers model with Superlinear layers.

Loading is plain transformers loading plus three steps: the "superlinear" attention function is registered
and selected, a `SuperlinearRouter` is attached to each converted attention module, and its weight is read
from the checkpoint's safetensors. The stock model class is used, so the converted directory also loads
with `AutoModelForCausalLM.from_pretrained` alone: that gives the dense model, with the routers reported as
unused weights. Remote code is never run and pickle files are never read.
"""

from __future__ import annotations

import contextlib
import math
import sys

import torch
from slkernels import SuperlinearConfig

from .architectures import architecture_for, layer_map
from .attention import register
from .checkpoint import DTYPES, check_checkpoint, checkpoint_path, find_weights, read_config, read_tensor
from .devices import resolve_device
from .dtypes import resolve_dtype
from .errors import SlconvertError, first_line
from .fast_mamba import warn_if_cpu_cannot_run
from .router import ROUTER_ATTRIBUTE, ROUTER_PARAMETERIZATION, SuperlinearRouter

__all__ = ["load", "is_converted", "install_routers", "read_block", "converted_block", "converted_params",
           "attach_superlinear",
           "quiet_transformers", "transformers_bars", "check_block", "load_pretrained", "check_weights_fit",
           "refuse_bad_weights"]

BLOCK_FORMAT = 1  # the `superlinear.format` this version writes and reads
_REMAKE = "re-make the checkpoint with `slconvert convert`"
_RESAVE = "the weights do not match config.json: re-save or re-download the checkpoint"


def check_block(block, where: str = "config.json", model_layers: list | None = None) -> dict:
    """`block` (a config's `superlinear` entry) checked to be what `slconvert convert` writes, else one line naming
    the field (`where`: the config it came from). Every reader of the block goes through here (`read_block`,
    `install_routers`, `surgery.open_source`), so a damaged block stops loading, training, evaluation, inspection
    and conversion alike. `model_layers`: the model's layer map (`architectures.layer_map`; None: unknown), whose
    softmax attention layers are the only ones the block may name as converted or kept dense."""
    layer_count = None if model_layers is None else len(model_layers)
    attention_layers = None if model_layers is None else [layer.index for layer in model_layers if layer.is_attention]

    def bad(field: str, why: str, fix: str = _REMAKE) -> SlconvertError:
        return SlconvertError(f"{where}: '{field}' {why}; {fix}")

    if not isinstance(block, dict):
        raise bad("superlinear", f"is {_kind(block)}, not the block `slconvert convert` writes")
    version = block.get("format")
    if "format" not in block:
        raise bad("superlinear.format", "is missing")
    if isinstance(version, bool) or version != BLOCK_FORMAT:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > BLOCK_FORMAT
        raise bad("superlinear.format", f"is {version!r}, and this slconvert reads format {BLOCK_FORMAT} only",
                  f"upgrade slconvert or {_REMAKE}" if newer else _REMAKE)
    params = block.get("params")
    if not isinstance(params, dict):
        raise bad("superlinear.params", "is missing" if "params" not in block else f"is {_kind(params)}, not an object")
    try:
        config = SuperlinearConfig.from_dict(params)
        expected_window = config.window
    except Exception as err:  # SuperlinearConfigError for a bad value, TypeError for an odd key, OverflowError
        raise bad("superlinear.params", f"is invalid ({first_line(err)})"
                  ) from None
    layers = block.get("layers")
    if "layers" not in block:
        raise bad("superlinear.layers", "is missing")
    if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise bad("superlinear.layers", f"is {layers!r}, not a list of layer numbers")
    if not layers:
        raise bad("superlinear.layers", "is empty: no layer is converted")
    if any(i < 0 for i in layers) or len(set(layers)) != len(layers):
        raise bad("superlinear.layers", f"is {layers}: layer numbers must be distinct and not negative")
    dense = block.get("dense_attention_layers", [])
    if not isinstance(dense, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in dense):
        raise bad("superlinear.dense_attention_layers", f"is {dense!r}, not a list of layer numbers")
    for field, numbers in (("layers", layers), ("dense_attention_layers", dense)):
        outside = [i for i in numbers if layer_count is not None and not 0 <= i < layer_count]
        if outside:
            raise bad(f"superlinear.{field}", f"is {numbers}: layer{'s' if len(outside) > 1 else ''} "
                      f"{', '.join(map(str, outside))} {'are' if len(outside) > 1 else 'is'} out of range; the model "
                      f"has layers 0..{layer_count - 1}")
    both = sorted(set(layers) & set(dense))
    if both:
        raise bad("superlinear.dense_attention_layers", f"is {dense}, and 'superlinear.layers' {layers} converts "
                  f"layer{'s' if len(both) > 1 else ''} {', '.join(map(str, both))} too: a layer is converted or "
                  "kept dense, not both")
    for field, numbers in (("layers", layers), ("dense_attention_layers", dense)):
        other = [i for i in numbers if attention_layers is not None and i not in attention_layers]
        if other:
            raise bad(f"superlinear.{field}", f"is {numbers}: layer{'s' if len(other) > 1 else ''} "
                      f"{', '.join(map(str, other))} {'are' if len(other) > 1 else 'is'} not softmax attention; the "
                      f"model's attention layers are {sorted(attention_layers)}")
    if "router" in block:
        _check_router(block["router"], layers, bad)
    window = block.get("window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 0):
        raise bad("superlinear.window", f"is {window!r}, not a number of tokens")
    if window is not None and window != expected_window:
        raise bad("superlinear.window", f"is {window}, but 'superlinear.params' give W = {expected_window}")
    return block


def _check_router(router, layers: list[int], bad) -> None:
    """The block's `router` entry: the parameterization this version computes, and per converted layer a tensor
    name (`tensors`) and a number (`alpha`). A value loading would skip (a layer not converted, a name that is no
    string) is refused here rather than left unused."""
    if not isinstance(router, dict):
        raise bad("superlinear.router", f"is {_kind(router)}, not an object")
    parameterization = router.get("parameterization", ROUTER_PARAMETERIZATION)
    if parameterization != ROUTER_PARAMETERIZATION:
        raise bad("superlinear.router.parameterization", f"is {_kind(parameterization)}, and this slconvert computes "
                  f"{ROUTER_PARAMETERIZATION!r} only")
    converted = {str(i) for i in layers}
    for field, what, fits in (("tensors", "tensor name", lambda v: isinstance(v, str) and bool(v)),
                              ("alpha", "number", _is_number)):
        entries = router.get(field, {})
        if not isinstance(entries, dict):
            raise bad(f"superlinear.router.{field}", f"is {_kind(entries)}, not a map of converted layer to a {what}")
        for layer, value in entries.items():
            if layer not in converted:
                raise bad(f"superlinear.router.{field}", f"names layer {layer!r}, which 'superlinear.layers' {layers} "
                          "does not convert")
            if not fits(value):
                raise bad(f"superlinear.router.{field}", f"gives layer {layer} {_kind(value)}, not a {what}")
    tensors = router.get("tensors", {})
    named = list(tensors.values())
    twice = next((name for name in named if named.count(name) > 1), None)
    if twice is not None:
        sharing = [layer for layer, name in tensors.items() if name == twice]
        raise bad("superlinear.router.tensors", f"gives layers {', '.join(sharing)} the one tensor {twice!r}: each "
                  "converted layer has its own router")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value) -> str:
    """A short description of a JSON value for a message: `null`, `'1,3'`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, (str, int, float)):
        return repr(value)
    return f"a {type(value).__name__}"


def read_block(path) -> dict | None:
    """The `superlinear` block of a checkpoint's config.json (checked: `check_block`, against the model's layer
    count), or None when it has none."""
    block = read_config(path).get("superlinear")
    if block is None:
        return None
    return check_block(block, str(checkpoint_path(path) / "config.json"), _model_layers(path))


def _model_layers(path) -> list | None:
    """The layers the checkpoint's config.json describes, as transformers reads it (`layer_map`, the map
    `slconvert inspect` shows: nemotron_h's config.json, for one, only lists the layers' kinds). None when
    transformers cannot read the config: the load that follows says why, in its own line."""
    try:
        config = transformers_config(checkpoint_path(path))
        return layer_map(architecture_for(config.model_type), config)
    except Exception:  # a config transformers refuses, or one whose layers cannot be mapped: no map is no verdict
        return None


def is_converted(path) -> bool:
    """True when the checkpoint's config.json has a `superlinear` block (made by `slconvert convert`); False when
    there is no config.json at `path`. A config.json that cannot be read, or a damaged block, is one line."""
    if not (checkpoint_path(path) / "config.json").is_file():
        return False
    return read_block(path) is not None


def converted_block(path) -> dict:
    """The `superlinear` block of a converted checkpoint; any other checkpoint is refused in one line."""
    block = read_block(path)
    if block is None:
        raise SlconvertError(
            f"{path} is not a Superlinear checkpoint (config.json has no 'superlinear' block); "
            "run `slconvert convert` first, or load it with transformers"
        )
    return block


def converted_params(path) -> SuperlinearConfig:
    """The attention settings of a converted checkpoint (its window, spans and powers), from the checked block of its
    config.json: known before any weight loads."""
    return SuperlinearConfig.from_dict(converted_block(path)["params"])


@contextlib.contextmanager
def quiet_transformers():
    """transformers' logging at errors only while a model is built (the routers are "unexpected" weights for the
    stock class; the loaders report what matters themselves), then back to what it was."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


@contextlib.contextmanager
def transformers_bars(shown: bool):
    """transformers' own progress bars (its "Loading weights" bar, for one) hidden while a block runs if not
    `shown`, then back to what they were: a command asked for no progress bars (`--quiet`) gets none of
    transformers' either. `shown` leaves them as the user set them (HF_HUB_DISABLE_PROGRESS_BARS)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before and not shown:
            hf_logging.enable_progress_bar()


def _router_tensors(block: dict, arch, weights) -> dict[int, str]:
    """The checkpoint tensor holding each converted layer's router: the name `router.tensors` gives it, else the
    first of the architecture's names the checkpoint holds. A router the checkpoint lacks is one line (before any
    weight is loaded, when `load` asks)."""
    where = weights.directory / "config.json"
    names = weights.names()
    recorded = block.get("router", {}).get("tensors", {})
    found = {}
    for layer in block["layers"]:
        name = recorded.get(str(layer))
        candidates = [name] if name else [f"{prefix}.{ROUTER_ATTRIBUTE}.weight" for prefix in arch.disk_candidates(layer)]
        found[layer] = next((c for c in candidates if c in names), None)
        if found[layer] is None:
            given = ", the name 'superlinear.router.tensors' gives it" if name else ""
            raise SlconvertError(f"{where}: the checkpoint lacks the router of converted layer {layer} "
                                 f"({candidates[0]}{given}); {_REMAKE}")
    return found


def install_routers(model: torch.nn.Module, block: dict, weights=None) -> dict[int, SuperlinearRouter]:
    """Attach a router to each converted attention module; load its weight from `weights` if given."""
    arch = architecture_for(model.config.model_type)
    check_block(block, "the model's 'superlinear' block" if weights is None else f"{weights.directory / 'config.json'}",
                layer_map(arch, model.config))
    params = SuperlinearConfig.from_dict(block["params"])
    tensors = _router_tensors(block, arch, weights) if weights is not None else {}
    installed = {}
    for layer in block["layers"]:
        layer = int(layer)
        path = arch.attention_module_path(layer)
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise SlconvertError(f"converted layer {layer} has no attention module at {path}; the checkpoint is inconsistent") from None
        reference = next((p for p in module.parameters()), None)
        heads_q = int(model.config.num_attention_heads)
        head_dim = int(getattr(module, "head_dim", 0) or model.config.hidden_size // heads_q)
        router = SuperlinearRouter(
            heads_q,
            head_dim,
            params,
            layer,
            dtype=reference.dtype if reference is not None else torch.float32,
            device=reference.device if reference is not None else None,
        )
        if weights is not None:
            name = tensors[layer]
            tensor = read_tensor(weights.locate(name), name)
            if tuple(tensor.shape) != tuple(router.weight.shape):
                raise SlconvertError(
                    f"router of layer {layer} has shape {list(tensor.shape)}, expected {list(router.weight.shape)}; "
                    "the checkpoint is inconsistent"
                )
            with torch.no_grad():
                router.weight.copy_(tensor.to(router.weight.dtype))
        setattr(module, ROUTER_ATTRIBUTE, router)
        installed[layer] = router
    return installed


def attach_superlinear(model: torch.nn.Module, block: dict, weights=None) -> dict[int, SuperlinearRouter]:
    """Make a model built from a converted checkpoint's config the converted model: its routers attached
    (`install_routers`, weights read from `weights` if given) and the block kept in its config (the mask function
    reads it; save_pretrained keeps it even where config.json was multimodal)."""
    installed = install_routers(model, block, weights)
    model.config.superlinear = block
    return installed


def load(path, device=None, dtype=None):
    """Load a converted checkpoint as a transformers model with Superlinear layers (eval mode).

    device: where to put the model (default: CPU); dtype: torch dtype or name (default: the checkpoint's).
    Converted layers run `slkernels.superlinear_attention` with their routers; attention layers kept dense
    run transformers' SDPA; `generate()` works through the KV cache.
    """
    path = checkpoint_path(path)
    target = None if device is None else resolve_device(device, "device=")  # before any weight is read
    torch_dtype = resolve_dtype(dtype)  # None: the checkpoint's
    block = converted_block(path)
    weights = check_checkpoint(path)  # refuses pickle-only checkpoints before transformers sees them
    _router_tensors(block, architecture_for(read_config(path).get("model_type")), weights)  # before the load, too
    model = load_pretrained(path, dtype="auto" if torch_dtype is None else torch_dtype,
                            attn_implementation=register(), weights=weights)
    attach_superlinear(model, block, weights)
    if target is not None:
        model.to(target)
    warn_if_cpu_cannot_run(model)
    model.eval()
    return model


def _loading_state(err: BaseException):
    """(model, loading info) of the transformers load that raised `err` after building its report (a weight that
    could not be converted, a size mismatch it was told not to ignore), read from the raising frames; None when
    `err` did not come from there."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame_locals = tb.tb_frame.f_locals
        info = frame_locals.get("loading_info")
        if info is not None and hasattr(info, "missing_keys") and hasattr(info, "mismatched_keys"):
            found = (frame_locals.get("model"), info)
        tb = tb.tb_next
    return found


_LOAD_FAILURES = ("size mismatch", "ignore_mismatched_sizes", "Error(s) in loading state_dict",
                  "automatic conversion of the weights")


def _config_reason(err: BaseException) -> str:
    """What transformers found wrong in a config, in one line: a validation error's reason is on its second line
    ("Validation error for field 'hidden_size':" / "TypeError: ... expected int, got str"), and a KeyError (a
    letter of a layer-pattern string that names no layer kind) is a bare quoted key."""
    if isinstance(err, KeyError) and err.args:
        return f"{err.args[0]!r} is not a value it knows (a layer pattern letter, for one)"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return first_line(err)


def transformers_config(path, model_type: str | None = None):
    """transformers' config of the local checkpoint at `path` (no remote code, nothing downloaded), the one place
    every command reads it: whatever transformers refuses in config.json (a field of the wrong type, a value it does
    not know) is one line naming the field. model_type: config.json's, when the caller has read it."""
    from transformers import AutoConfig

    model_type = read_config(path).get("model_type") if model_type is None else model_type
    kind = f"a {model_type} config" if model_type else "a transformers config"
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers' validation raises many kinds; each becomes the same line
        raise SlconvertError(f"config.json cannot be read as {kind} ({_config_reason(err)}); fix config.json or "
                             "re-download the checkpoint") from None
    reason = _invalid_size(config, model_type)
    if reason:
        raise SlconvertError(f"config.json of {path} is invalid ({reason}); fix config.json or re-download the "
                             "checkpoint")
    return config


def load_tokenizer(path, *, missing_ok: bool = False):
    """The checkpoint's tokenizer, or one line: config.json is read first, as the tokenizer reads it too (a field
    transformers refuses), then a checkpoint without a tokenizer is named (`missing_ok`: None instead)."""
    from transformers import AutoTokenizer

    transformers_config(path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        if missing_ok:
            return None
        raise SlconvertError(f"no usable tokenizer in {path} ({type(err).__name__}); save the tokenizer next to "
                             "the model with tokenizer.save_pretrained") from None


# Sizes a model config holds that must be positive integers (when present) for a model to exist.
_POSITIVE_FIELDS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers",
                    "vocab_size", "intermediate_size")


def _invalid_size(config, model_type) -> str | None:
    """The first size in the (language) config that is not a positive integer, as 'num_attention_heads is 0':
    transformers takes some of them (a vocabulary of -5, a head dim of 0) and fails later, deep in a model."""
    try:
        section = architecture_for(model_type).language_config(config)
    except SlconvertError:
        section = config
    for name in _POSITIVE_FIELDS:
        value = getattr(section, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return f"{name} is {value!r}, not a positive integer"
    return None


def load_pretrained(path, *, dtype=None, attn_implementation: str | None = None, weights=None):
    """The one place a checkpoint's weights are loaded with transformers (`slconvert.load`, the evaluation of an
    unconverted checkpoint, training's dense model and distillation teacher), under the one rule every load
    follows: each weight the model needs is in the checkpoint, in the shape the config gives it
    (`refuse_bad_weights`), else one line naming the first bad tensor. That rule is checked on the safetensors
    headers first (`check_weights_fit`), so the line comes before transformers starts loading (and its progress
    bar), not after. A failure of transformers' own (a file it cannot read, a config it refuses, a tensor it cannot
    convert) is one line too. Checkpoint tensors the model does not use (the routers, for the stock class) are left
    out; any other is a one-line warning.

    dtype: as transformers takes it (None: its default); tensors go where the current `torch.device` context says.
    weights: the checkpoint's WeightSet, when the caller has read it.
    """
    from transformers import AutoModelForCausalLM

    path = checkpoint_path(path)
    weights = check_checkpoint(path) if weights is None else weights
    config = transformers_config(path)
    check_weights_fit(path, weights, config)
    kwargs = {"use_safetensors": True, "trust_remote_code": False, "output_loading_info": True,
              "ignore_mismatched_sizes": True}  # mismatches come back in the loading info, refused below
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - older safetensors
        SafetensorError = OSError  # noqa: N806
    try:
        with quiet_transformers():  # transformers' own report is replaced by the lines below
            model, info = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except RuntimeError as err:
        state = _loading_state(err)
        if state is not None:
            model, info = state
            refuse_bad_weights(path, model, info.to_dict(), getattr(info, "conversion_errors", None), weights)
        if not any(marker in str(err) for marker in _LOAD_FAILURES):
            raise
        raise SlconvertError(f"transformers could not load the weights of {path}: {first_line(err)}; {_RESAVE}"
                             ) from None
    except SafetensorError as err:
        raise SlconvertError(f"the safetensors weights of {path} cannot be read ({first_line(err)}); re-save or "
                             "re-download the checkpoint") from None
    except (OSError, ValueError) as err:
        raise SlconvertError(f"transformers could not load {path}: {first_line(err)}") from None
    refuse_bad_weights(path, model, info, weights=weights)
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if ROUTER_ATTRIBUTE not in k)
    if unexpected:  # a line for the user, as every other message is, not Python's warning with its source line
        example = _file_key(unexpected[0], weights, model.state_dict())
        print(f"warning: {path}: {len(unexpected)} unused weight(s), e.g. {example}", file=sys.stderr)
    return model


def refuse_bad_weights(path, model, info: dict, conversion_errors: dict | None = None, weights=None) -> None:
    """The rule every load follows, in one place: one line, naming the first tensor (in the model's order) that is
    missing from the checkpoint, has another shape than the config gives it, or could not be converted, with the
    count of the others. `info`: transformers' loading info (missing_keys, mismatched_keys); routers are the
    loader's own business (`install_routers`). A missing or misshapen tensor is named as the checkpoint spells it
    (`_file_key`; `weights`: the checkpoint's WeightSet, read from `path` when not given)."""
    missing = {k for k in info.get("missing_keys", ()) if ROUTER_ATTRIBUTE not in k}
    mismatched = {entry[0]: entry for entry in info.get("mismatched_keys", ()) if ROUTER_ATTRIBUTE not in entry[0]}
    errors = {k: v for k, v in (conversion_errors or {}).items() if ROUTER_ATTRIBUTE not in k}
    bad = set(missing) | set(mismatched) | set(errors)
    if not bad:
        return
    order = {}
    if model is not None:
        with contextlib.suppress(Exception):
            order = {name: i for i, name in enumerate(model.state_dict())}
    first = min(bad, key=lambda name: (order.get(name, len(order)), name))
    if weights is None:
        with contextlib.suppress(SlconvertError, OSError):
            weights = find_weights(checkpoint_path(path))
    file_key = _file_key(first, weights, order) if weights is not None else first
    if first in mismatched:
        _, found, expected = mismatched[first]
        what = f"tensor {file_key} has shape {list(found)}, but its config.json makes it {list(expected)}"
    elif first in errors:
        detail = [line.strip() for line in str(errors[first]).strip().splitlines() if line.strip()]
        reason = next((line for line in reversed(detail) if not line.startswith(("Error", "Traceback"))), "")
        what = (f"the checkpoint tensors that make up {first} cannot be combined into it"
                + (f" ({reason})" if reason else ""))
    else:
        shape = _shape_of(model, first)
        what = f"lacks tensor {file_key}" + (f" (shape {shape})" if shape is not None else "") + \
            " that its config.json needs"
    others = len(bad) - 1
    tail = f" ({others} other tensor{'s' if others > 1 else ''} missing or misshapen too)" if others else ""
    raise SlconvertError(f"{path}: {what}{tail}; {_RESAVE}")


def _shape_of(model, name: str) -> list[int] | None:
    try:
        return list(model.get_parameter_or_buffer(name).shape)
    except Exception:
        return None


def _file_key(name: str, weights, model_keys) -> str:
    """The checkpoint's own name for the tensor transformers calls `name`, which the user looks for in the file:
    transformers may rename a leading prefix on loading (nemotron_h's `backbone.` is the model's `model.`). The
    renaming is read off the tensors the file and the model (`model_keys`) both hold under another first prefix, so
    a tensor the file lacks is named as the file would hold it; `name` itself where the file keeps the model's
    names or no single prefix fits."""
    names = weights.names()
    if name in names:
        return name
    head, _, tail = name.partition(".")
    tails = {key.partition(".")[2] for key in model_keys if key.partition(".")[0] == head}
    heads = {key.partition(".")[0] for key in names if key not in model_keys and key.partition(".")[2] in tails}
    return f"{heads.pop()}.{tail}" if len(heads) == 1 else name


def check_weights_fit(path, weights, config, model_class=None) -> tuple[set[str], list[str]] | None:
    """Refuse, before any tensor is read, a checkpoint whose tensors transformers would not load into the model its
    config describes: transformers' own loading (renamed prefixes, merged experts, tied weights, the keys it
    ignores) runs on the meta device with the safetensors headers standing in for the tensors, and its verdict
    goes through `refuse_bad_weights`. Takes a fraction of a second at any model size.

    model_class: the transformers class to load (default: AutoModelForCausalLM's for `config`). A check that
    cannot run here (a quantized checkpoint, an older transformers, a model its loader cannot place on the meta
    device) is skipped: the load itself then has the last word.

    Returns, when the check ran, the model's tensor names and the checkpoint's tensors it does not use (routers
    aside), for a caller with a stricter rule about those (`surgery.plan.check_weights`)."""
    if getattr(config, "quantization_config", None) is not None:
        return None
    if model_class is None:
        from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

        model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
        if model_class is None:
            return None
    import copy

    state = {entry.name: torch.empty(entry.shape, dtype=DTYPES[entry.dtype][0], device="meta")
             for f in weights.files for entry in f.tensors.values()}
    kwargs = {"config": copy.deepcopy(config), "state_dict": state, "device_map": "meta", "dtype": torch.float32,
              "ignore_mismatched_sizes": True, "output_loading_info": True,
              "use_kernels": False}  # the hub kernels know no meta device
    conversion_errors = None
    try:
        with quiet_transformers(), transformers_bars(False):  # a step the user does not wait on
            model, info = model_class.from_pretrained(None, **kwargs)
    except RuntimeError as err:
        found = _loading_state(err)
        if found is None:
            return None
        model, loading_info = found
        info, conversion_errors = loading_info.to_dict(), getattr(loading_info, "conversion_errors", None)
    except Exception:  # the check could not run; it is no verdict on the checkpoint
        return None
    refuse_bad_weights(path, model, info, conversion_errors, weights)
    unused = sorted(k for k in info.get("unexpected_keys", ()) if ROUTER_ATTRIBUTE not in k)
    return set(model.state_dict()), unused
