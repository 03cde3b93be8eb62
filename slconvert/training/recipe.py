"""Training recipes: a YAML file validated into a `Recipe`, plus ``KEY=VALUE`` overrides.

A recipe is the whole description of a run, so a run can be repeated (and resumed) from its recipe
alone. Validation happens before anything is loaded: an unknown key is refused with the list of valid
ones, a value of the wrong type or range names the key and what it accepts. Overrides use the same
spelling as the file (``lr=3e-4``, ``data.text=[a.txt]``, ``curriculum=[{seq_len: 64, steps: 10}]``);
their values are parsed as YAML.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..errors import SlconvertError, first_line
from ..inputs import read_user_text

__all__ = ["Recipe", "DataSpec", "LoraSpec", "Stage", "load_recipe", "parse_overrides", "recipe_from_dict",
           "TRAINABLE_PRESETS", "MODEL_KINDS", "LM_AVERAGES", "unreached"]

# The presets of `trainable` (slconvert/training/trainable.py says what each one trains).
TRAINABLE_PRESETS = ("router", "attention", "mixers", "all", "lora")
# Presets that need the routers of a converted model.
_CONVERTED_ONLY = ("router", "attention", "mixers", "lora")
PRECISIONS = ("auto", "bf16", "fp32")
HAYSTACKS = ("text", "builtin", "noise")
# Where a needle sample's needles of one key stand relative to each other. shuffled: in a random order, unrelated
# to the order the answer lists their values in; answer: in the answer's order, so that each value of the answer
# is the next needle of its key in the context after the one just written.
NEEDLE_ORDERS = ("shuffled", "answer")
# converted: a checkpoint made by `slconvert convert` (routers, Superlinear layers); dense: any plain
# checkpoint trained as it is (e.g. a teacher trained from a freshly initialized config).
MODEL_KINDS = ("converted", "dense")
# How the next-token loss averages over a micro-batch (recipe key `lm_average`; micro-batches, and processes, then
# weigh the same, so with one sequence per micro-batch both are the same):
# token: every labelled token weighs the same, so a text sample (every token labelled) outweighs a needle sample
#   (a few answer tokens) by its length; sample: every sequence weighs the same (its mean over its own labelled
#   tokens), so `data.niah_fraction` is the share of the loss that retrieval gets at any length.
LM_AVERAGES = ("token", "sample")
# Which query rows the router losses sample (recipe key `router_rows_from`): random: any row past the window;
# answers: first the rows that predict an answer token of the micro-batch's needle samples (where retrieval
# happens), then random ones up to `router_rows`. Drawn at random, 256 of a 4096-token sample's rows hold one or two
# of its 7-31 answer rows.
ROUTER_ROWS_FROM = ("random", "answers")


@dataclass
class DataSpec:
    """Where training sequences come from (see recipes/*.yaml for every field's meaning)."""

    text: list = field(default_factory=list)
    jsonl_field: str = "text"
    niah_fraction: float = 0.0
    niah_tasks: list = field(default_factory=lambda: ["single"])
    niah_haystack: str = "builtin"
    key_kind: str = "words"
    value_kind: str = "numbers"
    needle_order: str = "shuffled"
    corpus_tokens: int = 0


@dataclass
class LoraSpec:
    """LoRA adapters of `trainable: lora` (see recipes/niah-curriculum.yaml for every field's meaning)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    mlp: bool = False


@dataclass
class Stage:
    """One stage of the context-length curriculum: `steps` optimizer steps at `seq_len` tokens, on the needle
    tasks `niah_tasks` (None: the recipe's `data.niah_tasks`). A stage's own tasks let a run learn retrieval on
    the single needle at short lengths first, where it is cheap, before the harder tasks and longer contexts.
    `batch_size` / `micro_batch_size` (None: the recipe's, the micro-batch at most the stage's batch) let a long
    stage keep the tokens of a step, and the memory of a micro-batch, of the short ones before it."""

    seq_len: int
    steps: int
    niah_tasks: list | None = None
    batch_size: int | None = None
    micro_batch_size: int | None = None


@dataclass
class Recipe:
    """Every setting of a training run."""

    model_kind: str = "converted"
    max_steps: int = 100
    stop_at_step: int = 0
    time_limit_minutes: float = 0.0
    seq_len: int = 1024
    batch_size: int = 1
    micro_batch_size: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    trainable: object = "router"
    seed: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    precision: str = "auto"
    gradient_checkpointing: bool = False
    lm_weight: float = 1.0
    lm_average: str = "token"
    router_kl_weight: float = 0.0
    output_mse_weight: float = 0.0
    distill_weight: float = 0.0
    distill_teacher: str = "source"
    distill_temperature: float = 1.0
    router_rows: int = 256
    router_rows_from: str = "random"
    recall_rows: int = 512
    recall_every: int = 0
    curriculum: list = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)

    # ----- derived -----
    def stages(self) -> list[Stage]:
        """The curriculum as stages; without one, a single stage of `max_steps` at `seq_len`."""
        return list(self.curriculum) or [Stage(self.seq_len, self.max_steps)]

    def stage_at(self, step: int) -> Stage:
        """The stage of optimizer step `step` (0-based); the last stage runs on to the end."""
        done = 0
        for stage in self.stages():
            done += stage.steps
            if step < done:
                return stage
        return self.stages()[-1]

    @property
    def through_logits(self) -> bool:
        """Whether a loss reads the model's output (next-token loss or distillation): then the model runs with
        autograd; without one (router warm-up) it runs without, and only the router losses build a graph."""
        return self.lm_weight > 0 or self.distill_weight > 0

    def seq_len_at(self, step: int) -> int:
        """Context length of optimizer step `step` (0-based)."""
        return self.stage_at(step).seq_len

    def batch_of(self, stage: Stage) -> int:
        """Sequences per optimizer step in `stage`."""
        return stage.batch_size or self.batch_size

    def micro_batch_of(self, stage: Stage) -> int:
        """Sequences per forward pass in `stage`."""
        return stage.micro_batch_size or min(self.micro_batch_size, self.batch_of(stage))

    def sequences_before(self, step: int) -> int:
        """Sequences in optimizer steps 0 .. step - 1 (the ordinal of step `step`'s first sequence)."""
        return self._summed_before(step, self.batch_of)

    def tokens_before(self, step: int) -> int:
        """Tokens in optimizer steps 0 .. step - 1: the token budget a run has spent after `step` steps."""
        return self._summed_before(step, lambda stage: self.batch_of(stage) * stage.seq_len)

    def _summed_before(self, step: int, per_step) -> int:
        total, done = 0, 0
        stages = self.stages()
        for i, stage in enumerate(stages):
            steps = step - done if i == len(stages) - 1 else min(stage.steps, step - done)
            if steps <= 0:
                break
            total += steps * per_step(stage)
            done += steps
        return total

    def tasks_of(self, stage: Stage) -> list:
        """The needle tasks that `stage` samples from."""
        return list(stage.niah_tasks or self.data.niah_tasks)

    @property
    def longest(self) -> int:
        return max(stage.seq_len for stage in self.stages())

    def to_dict(self) -> dict:
        values = asdict(self)
        for stage in values["curriculum"]:  # a stage without settings of its own reads as it was written
            for key in ("niah_tasks", "batch_size", "micro_batch_size"):
                if stage[key] is None:
                    del stage[key]
        return values


_TOP = {f.name: f for f in fields(Recipe)}
_DATA = {f.name: f for f in fields(DataSpec)}
_LORA = {f.name: f for f in fields(LoraSpec)}
_NESTED = ("data", "lora")
_MAX_SEED = 2**32 - 1  # numpy's seeds (accelerate's set_seed) stop here


def _valid(names) -> str:
    return ", ".join(sorted(names))


def _type_error(key: str, value, want: str) -> SlconvertError:
    return SlconvertError(f"recipe key {key}={value!r} is invalid: {want}")


def _as_int(key: str, value, minimum: int = 0, maximum: int | None = None) -> int:
    want = f"use an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise _type_error(key, value, want)
    if value < minimum or (maximum is not None and value > maximum):
        raise _type_error(key, value, want)
    return int(value)


def _as_float(key: str, value, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False,
              hi_open: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _type_error(key, value, "use a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(key, value, "use a finite number")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        bound = f"{'>' if lo_open else '>='} {lo}" + ("" if hi == math.inf else f" and {'<' if hi_open else '<='} {hi}")
        raise _type_error(key, value, f"use a number {bound}")
    return float(value)


def _as_choice(key: str, value, choices) -> str:
    if value not in choices:
        raise _type_error(key, value, f"use one of {', '.join(choices)}")
    return value


def _as_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, value, "use true or false")
    return value


def _as_list(key: str, value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _type_error(key, value, "use a list")
    return list(value)


def _check_names(raw: dict, known: dict, section: str = "") -> None:
    """A key that YAML read as a number, null or boolean (`1: 2`, `null: x`) is refused by name, before the keys
    are compared or sorted with the others (where a non-string key would end in a TypeError)."""
    for key in raw:
        if not isinstance(key, str):
            spelled = "null" if key is None else str(key).lower() if isinstance(key, bool) else repr(key)
            name = f"{section}.{spelled}" if section else spelled
            raise SlconvertError(f"recipe key {name} is not a name; use one of the valid {section + ' ' if section else ''}"
                                 f"keys: {_valid(known)}")


def _section(name: str, raw, cls, known: dict):
    """A nested recipe mapping (data, lora) as its dataclass; unknown keys are refused with the valid ones."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _type_error(name, raw, f"use a mapping of {name} settings")
    _check_names(raw, known, name)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SlconvertError(f"unknown recipe key(s) {', '.join(name + '.' + k for k in unknown)}; "
                             f"valid {name} keys are: {_valid(known)}")
    return cls(**raw)


def _data(raw) -> DataSpec:
    spec = _section("data", raw, DataSpec, _DATA)
    spec.text = _as_list("data.text", spec.text)
    for path in spec.text:  # "" would read the current folder; null, [a] or {a: 1} a path spelled after them
        if isinstance(path, bool) or not isinstance(path, (str, int, float)) or not str(path).strip():
            raise _type_error("data.text", path, "each entry is the path of a text file or folder, e.g. "
                                                 "data.text=[corpus/]")
    spec.text = [str(p) for p in spec.text]
    if not isinstance(spec.jsonl_field, str) or not spec.jsonl_field:
        raise _type_error("data.jsonl_field", spec.jsonl_field, "use the name of the text field of each JSON line")
    spec.niah_fraction = _as_float("data.niah_fraction", spec.niah_fraction, 0.0, 1.0)
    spec.niah_tasks = _niah_tasks("data.niah_tasks", spec.niah_tasks)
    from .data import VALUE_KINDS

    spec.niah_haystack = _as_choice("data.niah_haystack", spec.niah_haystack, HAYSTACKS)
    spec.key_kind = _as_choice("data.key_kind", spec.key_kind, tuple(VALUE_KINDS))
    spec.value_kind = _as_choice("data.value_kind", spec.value_kind, tuple(VALUE_KINDS))
    spec.needle_order = _as_choice("data.needle_order", spec.needle_order, NEEDLE_ORDERS)
    spec.corpus_tokens = _as_int("data.corpus_tokens", spec.corpus_tokens, 0)
    if spec.niah_haystack == "text" and not spec.text:
        raise SlconvertError("data.niah_haystack=text needs data.text (files or folders of .txt/.jsonl); "
                             "set data.text or use niah_haystack=builtin")
    return spec


def _lora(raw) -> LoraSpec:
    spec = _section("lora", raw, LoraSpec, _LORA)
    spec.rank = _as_int("lora.rank", spec.rank, 1)
    spec.alpha = _as_float("lora.alpha", spec.alpha, 0.0, lo_open=True)
    spec.dropout = _as_float("lora.dropout", spec.dropout, 0.0, 1.0)
    spec.mlp = _as_bool("lora.mlp", spec.mlp)
    return spec


def _trainable(value):
    if isinstance(value, str) and value:
        if value in TRAINABLE_PRESETS:
            return value
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise _type_error("trainable", value, f"use one of {', '.join(TRAINABLE_PRESETS)} or a list of parameter "
                                          "name patterns such as ['*.self_attn.*']")


def _niah_tasks(name: str, value) -> list:
    from .data import NIAH_TASKS

    tasks = _as_list(name, value)
    if not tasks:
        raise _type_error(name, tasks, f"name at least one of {', '.join(NIAH_TASKS)}")
    for task in tasks:
        _as_choice(name, task, tuple(NIAH_TASKS))
    return tasks


_STAGE_KEYS = {"seq_len", "steps", "niah_tasks", "batch_size", "micro_batch_size"}


def _curriculum(value) -> list[Stage]:
    stages = []
    for i, item in enumerate(_as_list("curriculum", value)):
        if not isinstance(item, dict) or not {"seq_len", "steps"} <= set(item) <= _STAGE_KEYS:
            raise _type_error(f"curriculum[{i}]", item, "each stage is a mapping {seq_len: N, steps: M} with "
                                                       "optional niah_tasks: [single, ...], batch_size: B and "
                                                       "micro_batch_size: M")
        tasks = item.get("niah_tasks")
        sizes = {key: _as_int(f"curriculum[{i}].{key}", item[key], 1)
                 for key in ("batch_size", "micro_batch_size") if item.get(key) is not None}
        stages.append(Stage(_as_int(f"curriculum[{i}].seq_len", item["seq_len"], 2),
                            _as_int(f"curriculum[{i}].steps", item["steps"], 1),
                            None if tasks is None else _niah_tasks(f"curriculum[{i}].niah_tasks", tasks), **sizes))
    return stages


def recipe_from_dict(raw: dict) -> Recipe:
    """Validate a parsed recipe mapping; every problem is one `SlconvertError` line."""
    if not isinstance(raw, dict):
        raise SlconvertError("a recipe must be a YAML mapping of keys to values; see recipes/router-warmup.yaml")
    _check_names(raw, _TOP)
    unknown = sorted(set(raw) - set(_TOP))
    if unknown:
        raise SlconvertError(f"unknown recipe key(s) {', '.join(unknown)}; valid keys are: {_valid(_TOP)}")
    values = dict(raw)
    values["data"] = _data(values.get("data"))
    values["curriculum"] = _curriculum(values.get("curriculum"))
    values["lora"] = _lora(values.get("lora"))
    recipe = Recipe(**values)
    for key in ("max_steps", "batch_size", "micro_batch_size", "log_every"):
        setattr(recipe, key, _as_int(key, getattr(recipe, key), 1))
    for key in ("warmup_steps", "save_every", "keep_checkpoints", "router_rows", "recall_rows", "recall_every"):
        setattr(recipe, key, _as_int(key, getattr(recipe, key), 0))
    recipe.seq_len = _as_int("seq_len", recipe.seq_len, 2)  # a next-token target needs two tokens
    recipe.seed = _as_int("seed", recipe.seed, 0, _MAX_SEED)
    recipe.stop_at_step = _as_int("stop_at_step", recipe.stop_at_step, 0)
    if recipe.stop_at_step > recipe.max_steps:
        raise SlconvertError(f"stop_at_step={recipe.stop_at_step} is past max_steps={recipe.max_steps}; "
                             "set it to at most max_steps, or 0 to run the whole schedule")
    recipe.time_limit_minutes = _as_float("time_limit_minutes", recipe.time_limit_minutes, 0.0)
    recipe.lr = _as_float("lr", recipe.lr, 0.0, lo_open=True)
    recipe.min_lr_ratio = _as_float("min_lr_ratio", recipe.min_lr_ratio, 0.0, 1.0)
    recipe.weight_decay = _as_float("weight_decay", recipe.weight_decay, 0.0)
    recipe.adam_beta1 = _as_float("adam_beta1", recipe.adam_beta1, 0.0, 1.0, hi_open=True)  # AdamW needs < 1
    recipe.adam_beta2 = _as_float("adam_beta2", recipe.adam_beta2, 0.0, 1.0, hi_open=True)
    recipe.max_grad_norm = _as_float("max_grad_norm", recipe.max_grad_norm, 0.0)
    for key in ("lm_weight", "router_kl_weight", "output_mse_weight", "distill_weight"):
        setattr(recipe, key, _as_float(key, getattr(recipe, key), 0.0))
    recipe.distill_temperature = _as_float("distill_temperature", recipe.distill_temperature, 0.0, lo_open=True)
    if not isinstance(recipe.distill_teacher, str) or not recipe.distill_teacher.strip():
        raise SlconvertError(f"distill_teacher={recipe.distill_teacher!r} is not a path; use \"source\" (the model "
                             "the converted checkpoint was made from) or a checkpoint directory")
    recipe.precision = _as_choice("precision", recipe.precision, PRECISIONS)
    recipe.lm_average = _as_choice("lm_average", recipe.lm_average, LM_AVERAGES)
    recipe.router_rows_from = _as_choice("router_rows_from", recipe.router_rows_from, ROUTER_ROWS_FROM)
    recipe.model_kind = _as_choice("model_kind", recipe.model_kind, MODEL_KINDS)
    recipe.gradient_checkpointing = _as_bool("gradient_checkpointing", recipe.gradient_checkpointing)
    recipe.trainable = _trainable(recipe.trainable)
    if recipe.lm_weight == recipe.router_kl_weight == recipe.output_mse_weight == recipe.distill_weight == 0.0:
        raise SlconvertError("all loss weights are 0 (lm_weight, router_kl_weight, output_mse_weight, "
                             "distill_weight); set at least one > 0")
    if recipe.batch_size % recipe.micro_batch_size:
        raise SlconvertError(f"batch_size={recipe.batch_size} is not a multiple of micro_batch_size="
                             f"{recipe.micro_batch_size}; make it one")
    for i, stage in enumerate(recipe.curriculum):
        batch, micro = recipe.batch_of(stage), recipe.micro_batch_of(stage)
        if batch % micro:
            raise SlconvertError(f"curriculum[{i}] has batch_size {batch} and micro_batch_size {micro}: the batch "
                                 "must be a multiple of the micro-batch; set the stage's batch_size or "
                                 "micro_batch_size so that it is")
    if (recipe.router_kl_weight or recipe.output_mse_weight) and recipe.router_rows < 1:
        raise SlconvertError("router_rows=0 leaves the router losses without query rows; use router_rows >= 1")
    if recipe.model_kind == "dense":
        if recipe.router_kl_weight or recipe.output_mse_weight:
            raise SlconvertError("model_kind=dense has no routers; set router_kl_weight and output_mse_weight to 0")
        if recipe.lm_weight == 0.0 and recipe.distill_weight == 0.0:
            raise SlconvertError("model_kind=dense trains on the next-token loss or distillation; set lm_weight > 0 "
                                 "or distill_weight > 0")
        if recipe.distill_weight and recipe.distill_teacher == "source":
            raise SlconvertError("distill_teacher=source names the model a converted checkpoint was made from, and "
                                 "model_kind=dense has none; set distill_teacher to a checkpoint directory")
        if recipe.trainable in _CONVERTED_ONLY:
            raise SlconvertError(f"trainable={recipe.trainable} needs a converted model; with model_kind=dense use "
                                 "trainable: all or a list of parameter name patterns")
    if recipe.trainable == "lora" and (recipe.router_kl_weight or recipe.output_mse_weight):
        raise SlconvertError("trainable=lora trains through the next-token loss; set router_kl_weight and "
                             "output_mse_weight to 0 (train the routers first with recipes/router-warmup.yaml)")
    return recipe


def unreached(recipe: Recipe) -> list[str]:
    """What a valid recipe sets that a run of `max_steps` never reaches, one sentence each (the run prints them as
    warnings and goes on: a short test run of a long recipe is a common, deliberate case)."""
    notes = []
    if recipe.warmup_steps > recipe.max_steps:
        notes.append(f"warmup_steps={recipe.warmup_steps} is past max_steps={recipe.max_steps}: the learning rate "
                     f"ends at {recipe.max_steps / recipe.warmup_steps:.0%} of lr={recipe.lr:g}, still warming up, and "
                     "never decays (lower warmup_steps, or go on knowingly)")
    start, skipped = 0, []
    for stage in recipe.curriculum:
        if start >= recipe.max_steps:
            skipped.append(str(stage.seq_len))
        start += stage.steps
    if skipped:
        notes.append(f"the curriculum's stage(s) at {', '.join(skipped)} tokens start after max_steps="
                     f"{recipe.max_steps} and never run (raise max_steps to {start}, or go on knowingly)")
    return notes


def _parse_value(text: str):
    try:
        return _load_yaml(text) if text != "" else ""
    except _DuplicateKey as err:
        raise SlconvertError(f"override value {text!r} sets key {err.key!r} twice; keep one of them") from None
    except yaml.YAMLError as err:
        raise SlconvertError(f"override value {text!r} is not valid YAML ({_yaml_problem(err)}); quote it") from None


def parse_overrides(items) -> dict:
    """``["lr=1e-4", "data.text=[a.txt]"]`` -> nested mapping; a malformed item is refused."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise SlconvertError(f"override {item!r} is not KEY=VALUE; write e.g. max_steps=100")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts) or len(parts) > 2:
            raise SlconvertError(f"override key {key!r} is invalid; use a recipe key, data.KEY or lora.KEY")
        value = _number(_parse_value(text))
        if len(parts) == 2:
            if parts[0] not in _NESTED:
                raise SlconvertError(f"override key {key!r} is invalid: only {', '.join(n + '.*' for n in _NESTED)} "
                                 "keys are nested")
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            out[key] = value
    return out


_SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _number(value):
    """YAML 1.1 reads ``1e-4`` and ``1e3`` as strings; numbers in that spelling are meant as numbers. The one
    conversion of both overrides and recipe-file integers, so that ``max_steps: 1e3`` works as ``max_steps=1e3``."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if key in _NESTED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key, first: int, again: int):
        super().__init__(problem=f"key {key!r} is set twice")
        self.key, self.first, self.again = key, first, again


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a mapping that sets a key twice is refused: YAML keeps the last value silently,
    so a recipe edited in two places would run with whichever came last."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden, as in safe_load
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key; construct_mapping refuses it below
                    continue
        return super().construct_mapping(node, deep)


def _load_yaml(text: str):
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except RecursionError:  # the parser recurses per nesting level
        raise yaml.YAMLError("nested too deeply") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What a YAML error says went wrong, in one line (a reader's error, e.g. a control character, has no
    `problem` of its own)."""
    return getattr(err, "problem", None) or first_line(err)


def load_recipe(path, overrides=()) -> Recipe:
    """Read a recipe file, apply ``KEY=VALUE`` overrides, validate."""
    path = Path(path)
    if path.is_dir():
        raise SlconvertError(f"recipe {path} is a directory; pass a recipe YAML file such as "
                             "recipes/router-warmup.yaml")
    if not path.is_file():
        raise SlconvertError(f"recipe {path} does not exist; pass a YAML file such as recipes/router-warmup.yaml")
    text = read_user_text(path, "recipe", "pass a recipe YAML file such as recipes/router-warmup.yaml")
    try:
        raw = _load_yaml(text) or {}
    except _DuplicateKey as err:
        raise SlconvertError(f"recipe {path} sets key {err.key!r} twice (lines {err.first} and {err.again}); "
                             "keep one of them") from None
    except yaml.YAMLError as err:
        raise SlconvertError(f"recipe {path} is not valid YAML ({_yaml_problem(err)}); fix its syntax") from None
    if not isinstance(raw, dict):
        raise SlconvertError(f"recipe {path} must be a mapping of keys to values")
    return recipe_from_dict(_merge(raw, parse_overrides(overrides)))
