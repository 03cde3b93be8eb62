"""The training loop behind `slconvert train`: one process per device, launched plainly or by accelerate.

One optimizer step = the recipe's global batch (`batch_size` sequences, or its curriculum stage's), split into
micro-batches of `micro_batch_size` over the processes and accumulated; sequence i of step s is a pure function of
(seed, s, i) (`data.SequenceSource`), so one GPU and several GPUs see the same batches and a resumed run
continues exactly where the checkpoint left it.

The loss is ``lm_weight * LM + distill_weight * DISTILL + router_kl_weight * KL + output_mse_weight * MSE``
(DISTILL: KL from a dense teacher's next-token distribution, `losses.distill_sums`). With ``lm_weight`` and
``distill_weight`` 0 (router warm-up) the model runs without autograd and only the router losses, computed on the
captured attention inputs, build a graph: the host model costs one inference forward per micro-batch.

A non-finite loss or gradient norm stops the run before the optimizer step: nothing is saved after it,
so the last checkpoint on disk is the last good state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from tqdm.auto import tqdm

from ..errors import SlconvertError, one_line
from ..outputs import removed_on_failure, write_text_atomically
from .checkpoints import (
    CHECKPOINTS,
    check_state,
    checkpoint_name,
    checkpoint_step,
    damaged,
    finish_checkpoint,
    finished_steps,
    latest_checkpoint,
    prune,
    publish_final,
    read_trainer_state,
    write_model_dir,
    written_or_removed,
)
from .data import SequenceSource
from .logits import chunked_head, head_bypassed, output_head
from .losses import answer_rows, average_loss, distill_sums, next_token_sums, router_losses, sample_rows
from .metrics import METRICS_FILE, MetricsLog, plot_metrics, records_until
from .model_setup import (
    autocast,
    check_teacher_tokenizer,
    distill_teacher,
    enable_checkpointing,
    fsdp_launch,
    fsdp_plugin,
    needs_unused_parameter_search,
    precision,
    prepare_for_training,
    reads_weights,
    set_training_dtypes,
    training_model,
)
from .preflight import distill_path, preflight
from .recipe import recipe_from_dict, unreached
from .trainable import LORA_ADAPTER_DIR, apply_lora, check_patterns, is_lora, merged_state_dict, select_trainable

__all__ = ["Trainer", "TrainingStopped", "train", "make_scheduler"]


def make_scheduler(optimizer, recipe):
    """Linear warm-up over `warmup_steps`, then a cosine from the peak lr down to `min_lr_ratio` of it, reached at
    the last step (transformers' schedule, stepped once per optimizer step).

    Optimizer step s (0-based) runs at (s + 1) / warmup_steps of the peak during the warm-up, so the first step
    already moves the weights, and at 0.5 (1 + cos(pi (s - warmup_steps + 1) / (max_steps - warmup_steps)))
    (1 - min_lr_ratio) + min_lr_ratio of it after.
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

    return get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optimizer, recipe.warmup_steps, recipe.max_steps, min_lr_rate=recipe.min_lr_ratio)


# The next-token loss of each kind of sample (data.Sample.kind), logged as lm_niah / lm_text: the mean over every
# labelled token of the step's samples of that kind (whatever `lm_average`, so not a share of `lm`). The answer loss
# of the needle samples says whether retrieval is being learned, which the mixed loss hides when text samples are
# long.
_SAMPLE_KINDS = ("niah", "text")


def _loss_by_kind(sums: torch.Tensor, counts: torch.Tensor, kinds: list[str]) -> dict[str, float]:
    """Summed loss and labelled-token count per kind of one micro-batch (always every key, so processes agree)."""
    losses, tokens = torch.stack([sums.float(), counts.float()]).tolist()  # one read-back; the rest on the host
    logs = {}
    for kind in _SAMPLE_KINDS:
        logs[f"_lm_{kind}_sum"] = sum(v for v, k in zip(losses, kinds) if k == kind)
        logs[f"_lm_{kind}_count"] = sum(n for n, k in zip(tokens, kinds) if k == kind)
    return logs


def _finish_loss_by_kind(logs: dict) -> dict:
    """Turn a step's per-kind sums and counts into mean losses (`lm_niah`, `lm_text`), where the step had any."""
    for kind in _SAMPLE_KINDS:
        total, count = logs.pop(f"_lm_{kind}_sum", 0.0), logs.pop(f"_lm_{kind}_count", 0.0)
        if count > 0:
            logs[f"lm_{kind}"] = total / count
    return logs


def progress_line(step: int, max_steps: int, done: int, smooth: float, tokens: int, elapsed: float) -> str:
    """The line a run without a progress bar prints after `step` (1-based) of `max_steps`: `done` steps ran in this
    process (a resumed run counts from its resumption), `tokens` in `elapsed` seconds. The time left is their mean
    step time times the steps still to run."""
    eta = elapsed / done * (max_steps - step)
    return (f"step {step}/{max_steps} loss {smooth:.4f} (smoothed) {tokens / max(elapsed, 1e-9):.0f} tokens/s, "
            f"{elapsed:.0f} s, eta {eta:.0f} s")


def _saved_recipe(raw: dict) -> dict:
    """A checkpoint's recipe as it ran: read back through the recipe parser, so that a key newer than the run
    (at any depth) holds its default; as written when it no longer parses."""
    try:
        return recipe_from_dict(raw).to_dict()
    except SlconvertError:
        return raw


# What loading a checkpoint's accelerate state raises when a file of it is missing, truncated or not what it should
# be (accelerate: ValueError for a missing folder; torch.load: RuntimeError, EOFError, UnpicklingError; safetensors:
# SafetensorError; a missing file: OSError).
_UNLOADABLE = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def _other_model(state: dict, model_path: Path) -> str | None:
    """The --model a checkpoint's run started from (its trainer.json), when it is not `model_path`."""
    was = state.get("model")
    return was if isinstance(was, str) and was and Path(was) != model_path.resolve() else None


def _unloadable(checkpoint: Path, saved: dict, recipe, err: Exception, other_model: str | None = None,
                model_path: Path | None = None) -> SlconvertError:
    """The one line for a checkpoint whose state does not load: another set of trainable parameters than the recipe
    now asks for (the optimizer's state is per parameter), another --model than the run started from, or else a
    damaged checkpoint."""
    now = recipe.to_dict()
    keys = ("trainable", "lora") if recipe.trainable == "lora" else ("trainable",)
    changed = [k for k in keys if k in saved and saved[k] != now[k]]
    if changed:
        was = ", ".join(f"{k}={saved[k]!r}" for k in changed)
        return SlconvertError(f"the checkpoint {checkpoint} was saved with {was} and does not load into this run's "
                              f"{', '.join(f'{k}={now[k]!r}' for k in changed)}; resume with the checkpoint's value, "
                              f"or start a new run with --model {checkpoint}")
    if other_model:  # not damaged: it holds another model's weights
        return SlconvertError(f"the checkpoint {checkpoint} belongs to a run started from --model {other_model} and "
                              f"does not load into --model {model_path} ({one_line(err, 100)}); resume with --model "
                              f"{other_model}, or pass a new --output")
    return damaged(checkpoint, one_line(err, 100))


class TrainingStopped(SlconvertError):
    """The run stopped on a non-finite loss or gradient; the last checkpoint is untouched."""


class Trainer:
    """Set up with `Trainer(...)`, then `run()`; `model` (unwrapped) is available between the two."""

    def __init__(self, recipe, model_path, out, *, resume: bool = False, progress: bool = True):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.recipe, self.model_path, self.out = recipe, Path(model_path), Path(out)
        self.progress = progress
        checkpoint = preflight(recipe, self.model_path, self.out, resume)
        done = None if checkpoint is None else checkpoint_step(checkpoint)
        if done is not None:
            # A finished run is refused before anything is loaded: resuming it would redo nothing (or its last
            # steps) and rewrite its metrics, summary and final model.
            finished = finished_steps(self.out)
            if done > recipe.max_steps or (finished is not None and finished >= recipe.max_steps):
                raise SlconvertError(f"the run in {self.out} already reached max_steps={recipe.max_steps}; raise "
                                     "max_steps to train further, or pass a new --output")
        if done is not None and 0 < recipe.stop_at_step <= done:
            raise SlconvertError(f"the checkpoint to resume ({checkpoint.name}) is at or past stop_at_step="
                                 f"{recipe.stop_at_step}; raise stop_at_step, or set it to 0 to run to max_steps")
        kept = None
        if checkpoint is not None:
            check_state(checkpoint)
            kept = records_until(self.out / METRICS_FILE, done)  # nothing in OUT is rewritten until all has loaded
        cpu = not torch.cuda.is_available()
        sharded = fsdp_launch()
        if sharded and cpu:
            raise SlconvertError("this launch asks for FSDP, which accelerate runs only on GPUs, and none is "
                                 "visible; launch with configs/accelerate/ddp.yaml instead")
        process = PartialState(cpu=cpu)
        self.world, self.rank = process.num_processes, process.process_index
        self.precision = precision(recipe, process.device)
        self.autocast = functools.partial(autocast, process.device, self.precision)
        plugin = fsdp_plugin(self.precision) if sharded else None
        for stage in recipe.stages():
            per_step = recipe.micro_batch_of(stage) * self.world
            if recipe.batch_of(stage) % per_step:
                where = f" (the stage at {stage.seq_len} tokens)" if recipe.curriculum else ""
                raise SlconvertError(f"batch_size={recipe.batch_of(stage)}{where} is not a multiple of "
                                     f"micro_batch_size x processes = {per_step}; change batch_size or "
                                     "micro_batch_size")
        self.router_losses_on = recipe.router_kl_weight > 0 or recipe.output_mse_weight > 0
        if self.router_losses_on and sharded:
            raise SlconvertError("router losses read the routers outside the model's forward, which FSDP shards; "
                                 "run this recipe on one device or with configs/accelerate/ddp.yaml")
        window = None
        if recipe.model_kind == "converted":
            from ..loading import converted_params

            window = converted_params(self.model_path).window
        if self.router_losses_on and recipe.longest <= window + 1:
            raise SlconvertError(f"the longest sequence ({recipe.longest} tokens) never leaves the attention "
                                 f"window (W = {window}), so the router losses see no query; use seq_len of "
                                 f"at least {window + 2}")
        set_seed(recipe.seed)

        from ..loading import load_tokenizer
        from ..router import routers

        self.tokenizer = load_tokenizer(self.model_path)
        if recipe.distill_weight > 0:
            check_teacher_tokenizer(distill_path(recipe, self.model_path), self.tokenizer)
        vocab = json.loads((self.model_path / "config.json").read_text()).get("vocab_size") or len(self.tokenizer)
        self.source = SequenceSource(recipe, self.tokenizer, int(vocab))  # data problems surface before loading
        if isinstance(recipe.trainable, list):  # the model's layout is enough, and takes no time to build
            check_patterns(training_model(self.model_path, recipe.model_kind, weights=False), recipe.trainable)
        # Each process loads straight onto its own device (transformers follows a torch.device context), one
        # tensor at a time: under DDP every GPU holds the whole model anyway, and host memory holds little more
        # than the page cache of the weight files, which all processes share. FSDP2 shards from host memory,
        # where with fsdp_cpu_ram_efficient_loading (configs/accelerate/fsdp.yaml) only the main process loads
        # the weights: the others build the model on the meta device and receive their shards from it in
        # `prepare` below, so a 30B model is in host memory once, not once per GPU.
        model = training_model(self.model_path, recipe.model_kind, device=None if sharded else process.device,
                               weights=reads_weights(plugin, self.rank))
        if recipe.trainable == "lora":
            model = apply_lora(model, recipe.lora)
            self.trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        else:
            self.trainable = select_trainable(model, recipe.trainable)
        self.routers = routers(model)
        if self.router_losses_on:
            frozen = [i for i, r in self.routers.items() if not r.weight.requires_grad]
            if frozen:
                raise SlconvertError(f"router losses are on but the routers of layers {frozen} are frozen; "
                                     "add them to `trainable` (e.g. trainable: router)")
        positions = getattr(model.config, "max_position_embeddings", None)
        if process.is_main_process and isinstance(positions, int) and recipe.longest > positions:
            print(f"warning: seq_len {recipe.longest} exceeds the model's max_position_embeddings {positions}; "
                  "the model was never trained at this length (lower seq_len, or go on knowingly)",
                  file=sys.stderr, flush=True)
        set_training_dtypes(model, sharded=sharded, autocast_bf16=self.precision == "bf16")
        if recipe.gradient_checkpointing:
            enable_checkpointing(model)
        model.train(recipe.through_logits)
        self.teacher = distill_teacher(distill_path(recipe, self.model_path), model, process.device, sharded) \
            if recipe.distill_weight > 0 else None
        self.accelerator = acc = Accelerator(
            cpu=cpu,
            mixed_precision="no",  # bf16 is `autocast` (model_setup), chosen per run
            # One optimizer step = `gradient_accumulation_steps` micro-batches per process: `accumulate` skips
            # DDP's gradient all-reduce on all but the last, and `backward` divides each loss by their number.
            gradient_accumulation_steps=self._accumulation(recipe.stages()[0]),  # each `_step` sets its own
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=needs_unused_parameter_search(model, recipe, window))],
            fsdp_plugin=plugin,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2),
                                      weight_decay=recipe.weight_decay, eps=1e-8)
        scheduler = make_scheduler(optimizer, recipe)
        self.model, self.optimizer, self.scheduler = prepare_for_training(acc, model, optimizer, scheduler, plugin)
        self.unwrapped = acc.unwrap_model(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # The loss applies the output head a chunk of positions at a time where that gives the model's own logits
        # (logits.py): a 32K-token step at a 131K vocabulary then never holds 16 GiB of float32 logits. Not under
        # FSDP, where the head's weight may be a shard outside the model's forward: it keeps the full logits.
        self.head = self.teacher_head = None
        if recipe.through_logits and not sharded:
            self.head = chunked_head(self.unwrapped, self.model, int(vocab), acc.device, self.autocast)
            if self.teacher is not None:
                self.teacher_head = chunked_head(self.teacher, self.teacher, int(vocab), acc.device, self.autocast)
            if acc.is_main_process and (self.head is None or (self.teacher is not None and self.teacher_head is None)):
                tqdm.write("note: the output head cannot be applied after this model's forward (what follows it does "
                           "not commute with it); the loss holds the logits of whole sequences")

        self.start_step = 0
        self.checkpoint_step = None  # the step of the last checkpoint this run wrote
        if checkpoint is not None:
            state = read_trainer_state(checkpoint)
            saved = _saved_recipe(state.get("recipe", {}))
            saved = saved if isinstance(saved, dict) else {}
            other_model = _other_model(state, self.model_path)
            try:
                acc.load_state(str(checkpoint / "state"))
            except _UNLOADABLE as err:
                raise _unloadable(checkpoint, saved, recipe, err, other_model, self.model_path) from None
            self.start_step = done
            changed = sorted(k for k, v in recipe.to_dict().items() if saved.get(k) != v)
            if changed and acc.is_main_process:
                tqdm.write(f"resuming from {checkpoint.name} with changed recipe keys: {', '.join(changed)}")
            if other_model and acc.is_main_process:  # the final model takes its config and tokenizer from --model
                tqdm.write(f"note: resuming from {checkpoint.name} with --model {self.model_path}; the run started "
                           f"from {other_model}")
        self._kept_records = kept  # the metrics of the steps before the checkpoint resumed, written by `run`
        self.log = None

    # ----- one step -----
    def _tensors(self, samples):
        device = self.accelerator.device
        ids = torch.as_tensor(np.stack([s.input_ids for s in samples]), device=device)
        labels = torch.as_tensor(np.stack([s.labels for s in samples]), device=device)
        return ids, labels, [s.kind for s in samples]

    def _micro_loss(self, ids, labels, kinds, step: int, first: int) -> tuple[torch.Tensor, dict]:
        from ..attention import capture_attention

        recipe = self.recipe
        use_logits = recipe.through_logits
        capture = capture_attention(self.unwrapped) if self.router_losses_on else contextlib.nullcontext([])
        grad = contextlib.nullcontext() if use_logits else torch.no_grad()
        # Without the logits in the loss (router warm-up) the head's output is never read: bypass it too.
        bypass = output_head(self.unwrapped) if self.head is not None or not use_logits else None
        with capture as calls, grad, head_bypassed(bypass):
            logits = (self.model if use_logits else self.unwrapped)(input_ids=ids, use_cache=False).logits
        total = logits.new_zeros((), dtype=torch.float32)
        logs: dict = {}
        if use_logits:
            sums, counts = next_token_sums(logits, labels, self.head)
            lm = average_loss(sums, counts, recipe.lm_average)
            if recipe.lm_weight > 0:
                total = total + recipe.lm_weight * lm
            logs["lm"] = float(lm.detach())
            logs.update(_loss_by_kind(sums.detach(), counts, kinds))
        if self.teacher is not None:
            with torch.no_grad(), head_bypassed(output_head(self.teacher) if self.teacher_head else None):
                teacher_logits = self.teacher(input_ids=ids, use_cache=False).logits
            distill = average_loss(*distill_sums(logits, teacher_logits, labels, recipe.distill_temperature,
                                                 self.head, self.teacher_head), recipe.lm_average)
            del teacher_logits
            total = total + recipe.distill_weight * distill
            logs["distill"] = float(distill.detach())
        del logits
        if self.router_losses_on:
            generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step * 1009 + first)
            parts = {"kl": [], "mse": [], "recall": []}
            by_layer: dict[str, list[float]] = {}
            prefer = answer_rows(labels, kinds) if recipe.router_rows_from == "answers" else None
            for record in calls:
                rows = sample_rows(record, recipe.router_rows, generator,
                                   None if prefer is None else prefer[-record["q"].shape[2]:])
                if rows is None:
                    continue
                result = router_losses(record, self.routers[record["layer_idx"]], rows,
                                       kl=recipe.router_kl_weight > 0, mse=recipe.output_mse_weight > 0)
                for key in parts:
                    if key in result:
                        parts[key].append(result[key])
                by_layer.setdefault(str(record["layer_idx"]), []).append(result["recall"])
            for layer, values in by_layer.items():
                logs[f"recall_layer_{layer}"] = sum(values) / len(values)
            if parts["kl"]:
                kl = torch.stack(parts["kl"]).mean()
                total = total + recipe.router_kl_weight * kl
                logs["kl"] = float(kl.detach())
            if parts["mse"]:
                mse = torch.stack(parts["mse"]).mean()
                total = total + recipe.output_mse_weight * mse
                logs["mse"] = float(mse.detach())
            if parts["recall"]:
                logs["recall"] = sum(parts["recall"]) / len(parts["recall"])
        logs["loss"] = float(total.detach())
        return total, logs

    def _accumulation(self, stage) -> int:
        """Micro-batches per process in one optimizer step of `stage`."""
        return self.recipe.batch_of(stage) // (self.recipe.micro_batch_of(stage) * self.world)

    def _step(self, step: int) -> dict:
        acc = self.accelerator
        # A curriculum stage may change the batch: each step starts its own count of micro-batches, so that
        # `accumulate` synchronizes after the last of them and `backward` divides each loss by their number.
        acc.gradient_accumulation_steps = self._accumulation(self.recipe.stage_at(step))
        acc.step = 0
        micro_batches = self.source.micro_batches(step, self.rank, self.world)
        sums: dict[str, float] = {}
        for first, samples in micro_batches:
            ids, labels, kinds = self._tensors(samples)
            with acc.accumulate(self.model):
                with self.autocast():
                    loss, logs = self._micro_loss(ids, labels, kinds, step, first)
                if loss.requires_grad:
                    acc.backward(loss)
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
        if not self.recipe.through_logits and self.world > 1:
            # No DDP forward ran (the model runs without autograd and only the routers, called directly, build a
            # graph), so DDP's gradient hooks were never armed and `accumulate` synchronizes nothing: average the
            # router gradients here (without it two processes drift from one, tests/test_train_distributed.py).
            for param in self.params:
                if param.grad is not None:
                    param.grad = acc.reduce(param.grad, reduction="mean")
        if self.world > 1:
            keys = sorted(sums)
            values = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device), reduction="mean")
            sums = dict(zip(keys, values.tolist()))
        sums = _finish_loss_by_kind(sums)
        max_norm = self.recipe.max_grad_norm or math.inf
        grad_norm = float(acc.clip_grad_norm_(self.params, max_norm)) if any(
            p.grad is not None for p in self.params) else 0.0
        problem = None
        if not math.isfinite(sums["loss"]):
            problem = f"non-finite loss ({sums['loss']})"
        elif not math.isfinite(grad_norm):
            problem = f"non-finite gradient norm ({grad_norm})"
        if problem:
            self.optimizer.zero_grad(set_to_none=True)
            self._stop(step, problem)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        sums["grad_norm"] = grad_norm
        return sums

    def _stop(self, step: int, problem: str) -> None:
        last = latest_checkpoint(self.out)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        if self.log is not None:
            self.log.write({"event": "stopped", "step": step + 1, "reason": problem})
            plot_metrics(self.log.read(), self.out / "training.png")
        raise TrainingStopped(f"{problem} at step {step + 1}: training stopped and nothing was saved after it; "
                              f"{where} (lower lr or check the data, then resume with --resume)")

    # ----- span recall on a held-out batch -----
    @torch.no_grad()
    def measure_recall(self) -> dict[str, float]:
        """Per converted layer, the dense attention mass inside spans + window on the held-out batch."""
        from ..attention import capture_attention

        count = self.recipe.recall_rows
        samples = [self.source.eval_sample(i) for i in range(self.recipe.micro_batch_of(self.recipe.stages()[-1]))]
        ids, _, _ = self._tensors(samples)
        with self.autocast(), capture_attention(self.unwrapped) as calls, head_bypassed(output_head(self.unwrapped)):
            self.unwrapped(input_ids=ids, use_cache=False)  # the logits are not read: no head
        generator = torch.Generator().manual_seed(self.recipe.seed + 17)
        per_layer: dict[str, list[float]] = {}
        for record in calls:
            rows = sample_rows(record, count, generator)
            if rows is not None:
                result = router_losses(record, self.routers[record["layer_idx"]], rows, kl=False, mse=False)
                per_layer.setdefault(str(record["layer_idx"]), []).append(result["recall"])
        return {layer: sum(v) / len(v) for layer, v in per_layer.items()}

    def _log_recall(self, step: int, when: str) -> dict | None:
        if not self.recipe.recall_rows or not self.routers:
            return None
        layers = self.measure_recall()
        if not layers:
            return None
        record = {"event": "span_recall", "when": when, "step": step, "layers": layers,
                  "mean": sum(layers.values()) / len(layers)}
        if self.log is not None:
            self.log.write(record)
        return record

    def _routers_only(self) -> bool:
        """Whether the routers are all that trains (then span recall measures the routers alone)."""
        router_ids = {id(p) for r in self.routers.values() for p in r.parameters()}
        return bool(self.params) and all(id(p) in router_ids for p in self.unwrapped.parameters() if p.requires_grad)

    # ----- saving -----
    def _write_model(self, dest: Path) -> None:
        state_dict = self.accelerator.get_state_dict(self.model)
        if not self.accelerator.is_main_process:
            return
        if is_lora(self.unwrapped):  # merged weights that load like any checkpoint, plus the adapter itself
            write_model_dir(self.unwrapped.get_base_model(), merged_state_dict(self.unwrapped, state_dict),
                            self.model_path, dest)
            self.unwrapped.save_pretrained(dest / LORA_ADAPTER_DIR)
        else:
            write_model_dir(self.unwrapped, state_dict, self.model_path, dest)

    def save_checkpoint(self, step: int) -> Path:
        """Every `save_every` steps: a checkpoint (a subclass may measure the model there instead)."""
        return self.write_checkpoint(step)

    def write_checkpoint(self, step: int) -> Path:
        """The whole training state at `step` (optimizer, scheduler, RNG, model) that `--resume` continues."""
        acc = self.accelerator
        root = self.out / CHECKPOINTS
        final = root / checkpoint_name(step)
        partial = root / f".{checkpoint_name(step)}.partial"
        last = latest_checkpoint(self.out)
        then = (f"the earlier checkpoint {last.name} is intact: free space, then --resume" if last
                else "free space, then run again with a new --output")
        with written_or_removed(partial, f"checkpoint {final}", then):
            if acc.is_main_process:
                root.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir()
            acc.wait_for_everyone()
            acc.save_state(str(partial / "state"))
            self._write_model(partial)
            if acc.is_main_process:
                finish_checkpoint(partial, final, {"step": step, "recipe": self.recipe.to_dict(),
                                                   "model": str(self.model_path.resolve())})
        self.checkpoint_step = step
        if acc.is_main_process:
            prune(self.out, self.recipe.keep_checkpoints)
            plot_metrics(self.log.read(), self.out / "training.png")
        acc.wait_for_everyone()
        return final

    def _save_final(self, summary: dict) -> None:
        acc = self.accelerator
        partial = self.out / ".final.partial"
        last = latest_checkpoint(self.out)
        then = (f"the checkpoint {last.name} is intact: free space, then --resume" if last
                else "free space, then run again with a new --output")
        with written_or_removed(partial, f"the final model into {self.out}", then):
            if acc.is_main_process:
                shutil.rmtree(partial, ignore_errors=True)
            acc.wait_for_everyone()
            self._write_model(partial)
            if acc.is_main_process:
                publish_final(partial, self.out)
                write_text_atomically(self.out / "training_summary.json", json.dumps(summary, indent=2) + "\n")
        acc.wait_for_everyone()

    def _out_of_time(self, mine: bool) -> bool:
        """Whether any process has reached the time limit (all processes must stop at the same step)."""
        if self.world == 1:
            return mine
        flag = torch.tensor([1.0 if mine else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    # ----- the run -----
    def run(self) -> dict:
        """Train, writing into OUT from here on: a run that fails or is interrupted before any checkpoint is in OUT
        removes what it wrote there (OUT too, and its parents, where it made them), since nothing of it could be
        resumed; from the first checkpoint on, everything stays, to continue with --resume."""
        acc = self.accelerator

        def resumable() -> list[Path]:
            return list(self.out.iterdir()) if latest_checkpoint(self.out) is not None else []

        kept = (removed_on_failure(self.out, finished=resumable, then="continue the run with --resume")
                if acc.is_main_process else contextlib.nullcontext())
        with kept:
            if acc.is_main_process:
                write_text_atomically(self.out / "recipe.yaml", yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
                self.log = MetricsLog(self.out / METRICS_FILE, self._kept_records)
            acc.wait_for_everyone()
            return self._run()

    def _run(self) -> dict:
        recipe, acc = self.recipe, self.accelerator
        before = self._log_recall(self.start_step, "before") if self.start_step == 0 else None
        cuda = acc.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(acc.device)
        bar = tqdm(total=recipe.max_steps, initial=self.start_step, desc="train", unit="step",
                   disable=not (self.progress and acc.is_main_process), dynamic_ncols=True)
        quiet_lines = acc.is_main_process and not self.progress
        every = max(1, recipe.max_steps // 10)  # a line every tenth of the run when the bar is off
        if acc.is_main_process and self.start_step >= recipe.max_steps:  # its final save failed: redo only that
            print(f"all {recipe.max_steps} steps are trained; writing the final model -> {self.out}",
                  file=sys.stderr, flush=True)
        elif acc.is_main_process:
            for note in unreached(recipe):
                print(f"warning: {note}", file=sys.stderr, flush=True)
            first = recipe.stage_at(self.start_step)
            print(f"training steps {self.start_step + 1}-{recipe.max_steps} of {recipe.batch_of(first)} x "
                  f"{recipe.seq_len_at(self.start_step)} tokens on {acc.device} ({acc.num_processes} process(es), "
                  f"{sum(p.numel() for p in self.params):,} trainable parameters) -> {self.out}",
                  file=sys.stderr, flush=True)
        started = time.perf_counter()
        tokens_done = 0
        ema, beta = 0.0, 0.95
        last = {}
        limit_s = recipe.time_limit_minutes * 60.0
        end_step = recipe.max_steps
        stop_at = recipe.stop_at_step or recipe.max_steps
        for step in range(self.start_step, recipe.max_steps):
            tick = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            logs = self._step(step)
            if cuda:
                torch.cuda.synchronize(acc.device)
            seconds = time.perf_counter() - tick
            seq_len = recipe.seq_len_at(step)
            tokens = recipe.batch_of(recipe.stage_at(step)) * seq_len
            tokens_done += tokens
            # Exponential average over every step (bias-corrected, as Adam's moments), logged with each line, so
            # a plot of sparse log lines still shows the loss of all steps (needle and text batches alternate).
            ema = beta * ema + (1.0 - beta) * logs["loss"]
            smooth = ema / (1.0 - beta ** (step + 1 - self.start_step))
            record = {"step": step + 1, **logs, "loss_smooth": smooth, "lr": lr, "seq_len": seq_len,
                      "tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9),
                      "elapsed_s": time.perf_counter() - started}
            if cuda:
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
            last = record
            if self.log is not None and ((step + 1) % recipe.log_every == 0 or step + 1 == recipe.max_steps):
                self.log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{record['lr']:.2e}", len=seq_len,
                            tok_s=f"{record['tokens_per_s']:.0f}")
            done = step + 1 - self.start_step
            if quiet_lines and (done == 1 or (step + 1) % every == 0 or step + 1 == recipe.max_steps):
                print(progress_line(step + 1, recipe.max_steps, done, smooth, tokens_done,
                                    time.perf_counter() - started), file=sys.stderr, flush=True)
            if recipe.recall_every and (step + 1) % recipe.recall_every == 0 and step + 1 < recipe.max_steps:
                self._log_recall(step + 1, "during")
            if recipe.save_every and (step + 1) % recipe.save_every == 0:
                self.save_checkpoint(step + 1)
            why = None
            if step + 1 >= stop_at and step + 1 < recipe.max_steps:
                why = f"stop_at_step={stop_at} reached"
            elif limit_s and step + 1 < recipe.max_steps and self._out_of_time(time.perf_counter() - started >= limit_s):
                why = f"time limit of {recipe.time_limit_minutes:g} min reached"  # a scheduler's job limit
            if why:
                # The model as it is now becomes the final one, and a checkpoint keeps the rest of the schedule.
                end_step = step + 1
                if acc.is_main_process:
                    print(f"{why} after step {end_step} of {recipe.max_steps}; saving the model as it is and a "
                          "checkpoint to --resume from", file=sys.stderr, flush=True)
                if self.log is not None and end_step % recipe.log_every:
                    self.log.write(record)
                if self.checkpoint_step != end_step:  # unless `save_every` wrote it just above
                    self.write_checkpoint(end_step)
                break
        bar.close()
        after = self._log_recall(end_step, "after")
        summary = {"steps": end_step, "planned_steps": recipe.max_steps,
                   "stopped_at_time_limit": end_step < min(stop_at, recipe.max_steps),
                   "stopped_at_step": end_step == stop_at < recipe.max_steps,
                   "resumed_from": self.start_step, "last": last,
                   "tokens_per_s_mean": tokens_done / max(time.perf_counter() - started, 1e-9),
                   "span_recall_before": before and before["layers"], "span_recall_after": after and after["layers"],
                   "processes": self.world, "mixed_precision": self.precision,
                   "trainable_parameters": sum(p.numel() for p in self.params),
                   "routers_only": self._routers_only()}
        self._save_final(summary)
        if acc.is_main_process:
            plot_metrics(self.log.read(), self.out / "training.png")
        return summary


def train(recipe, model_path, out, *, resume: bool = False, progress: bool = True) -> dict:
    """Run a recipe on a checkpoint (converted, or plain with model_kind: dense); OUT ends as a loadable
    checkpoint with metrics and plots. `progress` False: no progress bars, transformers' included."""
    from ..loading import transformers_bars

    with transformers_bars(progress):
        return Trainer(recipe, model_path, out, resume=resume, progress=progress).run()
