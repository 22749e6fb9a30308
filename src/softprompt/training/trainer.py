"""The one training loop: objectives and phases come from the config, never a new loop.

Per batch: the workload turns examples into the objectives' inputs (a tokenized batch, or
a rollout with rewards), the active objectives run (sharing one forward pass) and their
weighted losses are summed, backward (accumulated over ``grad_accum`` micro-batches), clip,
step AdamW and the warmup+cosine schedule. An RL rollout is reused for ``num_iterations``
optimizer steps. Evaluate each epoch (or every N steps; RL runs also before training), keep
``checkpoints/best`` by the main metric and ``checkpoints/last`` for an exact ``--resume``
(and ``checkpoints/step-<N>`` every ``train.save_steps``), stop early on a plateau, show a rich progress bar.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import torch

from ..config import to_dict
from ..errors import ConfigError, SoftPromptError, TrainingDiverged, TrainingInterrupted
from ..objectives import OBJECTIVES
from ..runs import RunFolder
from ..storage import write_json
from .checkpoint import (
    STEP_PREFIX,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_reference,
    prune_step_checkpoints,
    save_checkpoint,
)
from .distributed import SHARDED, Dist, full_numel


@dataclass
class Data:
    train: list  # list[Example]
    eval: list
    info: dict = field(default_factory=dict)  # where the examples came from, for the run's data.json


def batches_of(n: int, size: int, seed: int, epoch: int, shuffle: bool = True) -> list[torch.Tensor]:
    """The epoch's (shuffled) batches of example indices: a pure function of (seed, epoch)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)) if shuffle \
        else torch.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def strategy_of(train_section) -> str:
    """``train.strategy``, or what ``accelerate launch`` was configured with: an FSDP config gives
    ``fsdp`` (accelerate sets ACCELERATE_USE_FSDP), a DeepSpeed config with ZeRO stage 3 gives
    ``deepspeed``. Stages 0-2 partition only optimizer state and gradients, which here are the
    adapter's alone, so they run as ``ddp`` (the same update)."""
    import logging
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        if stage == "3":
            return "deepspeed"
        logging.getLogger("softprompt").info(
            "DeepSpeed ZeRO stage %s partitions optimizer state and gradients, which here are only the adapter's: "
            "running as ddp (ZeRO stage 3 shards the frozen backbone)", stage or "?")
        return "ddp"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    return train_section.strategy


class Trainer:
    def __init__(self, config, work, data: Data, run: RunFolder | None, run_path=None):
        from accelerate import Accelerator
        from transformers import get_scheduler

        self.config, self.work, self.data, self.run = config, work, data, run
        self.run_path = run.path if run is not None else run_path  # every rank knows it; rank 0 writes it
        self.clf = work.module  # the module being trained: a classifier or an RL policy
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.dist = Dist(self.accelerator)
        self.clf.to(self.accelerator.device)
        tr = config.train
        self.strategy = strategy_of(tr)
        if self.strategy in SHARDED:
            self.dist.shard_backbone(self.clf.model.model, self.strategy)
            if self.dist.lockstep:  # gradients must not flow through a KV cache built by an earlier
                self.clf.model.share_prompt = False  # forward: FSDP re-gathers weights per forward's outputs
        self.objectives = {name: OBJECTIVES.get(name)(cfg) for name, cfg in config.objectives().items()}
        work.prepare(self.objectives, data.train)
        self.schedule = config.schedule()
        self.inner_updates, self.mini_batches = config.method.inner_updates, config.method.mini_batches
        if self.inner_updates > 1 and tr.grad_accum > 1:
            raise ConfigError("method.num_iterations > 1 needs train.grad_accum = 1 (each inner update is a step)")
        if self.mini_batches > 1 and tr.grad_accum > 1:
            raise ConfigError("method.num_mini_batches > 1 needs train.grad_accum = 1 (each minibatch is a step)")
        if self.mini_batches > tr.batch:
            raise ConfigError(f"method.num_mini_batches={self.mini_batches} exceeds train.batch={tr.batch}: a "
                              "minibatch holds whole prompts (with their samples)")
        groups = [{"params": self.clf.model.trainable_parameters(), "lr": tr.lr}]
        head = [p for p in self.clf.head_parameters() if p.requires_grad]
        if head:
            groups.append({"params": head, "lr": tr.head_lr if tr.head_lr is not None else tr.lr / 10})
        low = [p for g in groups for p in g["params"] if p.dtype != torch.float32]
        if low:  # an optimizer over bf16 weights loses small updates to rounding: trained weights are fp32
            raise SoftPromptError(f"{len(low)} trainable parameters are {low[0].dtype}, not float32; trained "
                                  "weights and optimizer state are kept in float32 whatever model.dtype is")
        self.optimizer = torch.optim.AdamW(groups, lr=tr.lr, weight_decay=tr.weight_decay)
        # fp16 activations underflow in backward: the loss is scaled up (and the gradients back down)
        self.scaler = torch.amp.GradScaler(self.accelerator.device.type,
                                           enabled=self.clf.model.compute_dtype == torch.float16)
        per_batch = self.inner_updates * self.mini_batches  # optimizer steps on each batch
        self.steps_per_epoch = math.ceil(math.ceil(len(data.train) / tr.batch) / tr.grad_accum) * per_batch
        total = self.steps_per_epoch * tr.epochs
        if tr.max_steps:
            total = min(total, tr.max_steps)
        self.total_steps = total
        self.scheduler = get_scheduler(tr.scheduler if tr.scheduler != "constant" else "constant_with_warmup",
                                       self.optimizer, num_warmup_steps=int(tr.warmup_ratio * total),
                                       num_training_steps=total)
        self.counters = {"epoch": 0, "micro_step": 0, "global_step": 0, "best": None, "bad_evals": 0,
                         "train_time_sec": 0.0, "stopped_early": False, "before": None, "base": None,
                         "skipped_steps": 0, "bad_steps_in_a_row": 0}
        self.before_rows: list[dict] = []
        self._last_eval: tuple | None = None  # (step, metrics, rows, was the best) of the latest evaluation
        self.on_step = None  # optional callable(logs) after each optimizer step (library users, benchmarks)
        if run is not None:
            run.start_tracking(tr.report_to, to_dict(config), tr.project)
        self._interrupted = False  # set by the first Ctrl-C

    # -- training --------------------------------------------------------------------------------
    def resume(self) -> None:
        from pathlib import Path

        last = latest_checkpoint(Path(self.run_path) / "checkpoints")  # last, or a later step-<N>
        if last is None:
            raise SoftPromptError(f"{self.run_path} has no complete checkpoint to resume from (checkpoints/last)")
        self.counters = load_checkpoint(last, self.clf, self.optimizer, self.scheduler)
        if self.scaler.is_enabled() and self.counters.get("grad_scaler"):
            self.scaler.load_state_dict(self.counters["grad_scaler"])
        for name, state in self.counters.pop("objectives", {}).items():
            if hasattr(self.objectives.get(name), "load_state_dict"):
                self.objectives[name].load_state_dict(state)
        if getattr(self.work, "reference", None) is not None:
            load_reference(last, self.work.reference)
        if self.run:
            self.run.truncate_epoch_metrics(self.counters["global_step"])

    def fit(self, progress: bool = True) -> dict:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        tr, c = self.config.train, self.counters
        self.clf.train()
        columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}  {task.fields[metric]}"), TimeRemainingColumn()]
        progress = progress and self.dist.is_main
        with Progress(*columns, disable=not progress, transient=False) as bar, self._ctrl_c():
            job = bar.add_task("train", total=self.total_steps, completed=c["global_step"], epoch=c["epoch"] + 1,
                               loss=float("nan"), metric="")
            if self.work.evaluate_before and c["global_step"] == 0:
                self._evaluate_before()
            while c["epoch"] < tr.epochs and not self._finished():
                start, epoch = time.perf_counter(), c["epoch"]
                self._train_epoch(bar, job)
                c["train_time_sec"] += time.perf_counter() - start
                if c["epoch"] > epoch or self._finished():  # a whole epoch (or the step budget) is done
                    if c["epoch"] == epoch:  # the budget ended it early: count it as done too
                        c["epoch"], c["micro_step"] = epoch + 1, 0
                    if not tr.eval_every:
                        self._evaluate_and_keep(bar, job, epoch=c["epoch"])
                    self._save("last")
                if c["stopped_early"]:
                    break
            if tr.eval_every and not c["stopped_early"] and (self._last_eval or (None,))[0] != c["global_step"]:
                self._evaluate_and_keep(bar, job, epoch=c["epoch"])  # the steps after the last evaluation count too
                self._save("last")
        try:
            return self.finish()
        finally:
            getattr(self.work, "close", lambda: None)()  # a vLLM engine's process and memory
            self.dist.release()

    def _finished(self) -> bool:
        return self.counters["global_step"] >= self.total_steps or self.counters["stopped_early"]

    def _train_epoch(self, bar, job) -> None:
        tr, c = self.config.train, self.counters
        weights = self.schedule.weights(c["epoch"])
        batches = batches_of(len(self.data.train), tr.batch, self.config.seed, c["epoch"], tr.shuffle)
        n_local = 0  # this rank's examples in the optimizer step being accumulated
        for i in range(c["micro_step"], len(batches)):
            examples = self.dist.shard([self.data.train[j] for j in batches[i].tolist()])
            n_local += len(examples)
            started = time.perf_counter()
            inputs, batch_logs = (self.work.inputs(examples, c["epoch"], c["global_step"], self.accelerator.device)
                                  if examples else (None, {}))  # a rank with no share of a short batch
            step_before = c["global_step"]
            last_micro = (i + 1) % tr.grad_accum == 0 or i + 1 == len(batches)  # an optimizer step follows
            parts = self._minibatches(inputs, weights)
            for n_pass, part in enumerate(p for _ in range(self.inner_updates) for p in parts):
                if n_pass and part is not None:
                    part.fresh()  # same rollout, new forward pass under the updated prompt
                total, logs = torch.zeros((), device=self.accelerator.device), dict(batch_logs)
                for name, weight in (weights.items() if part is not None else ()):
                    out = self.objectives[name](part)
                    total = total + weight * out.loss
                    logs[f"loss/{name}"] = out.loss.item()
                    logs.update({f"{name}/{k}": v for k, v in out.metrics.items()})
                if part is not None:
                    self.accelerator.backward(self.scaler.scale(total / tr.grad_accum))
                if not last_micro:
                    break
                if self.dist.enabled:
                    logs["allreduce_seconds"] = self.dist.sync_grads(self.clf.trainable_parameters(), n_local)
                logs["step_seconds"] = time.perf_counter() - started
                self._optimizer_step(total, logs, bar, job)
                started = time.perf_counter()
                if self._finished():
                    break
            if last_micro:
                n_local = 0
            if i + 1 == len(batches):  # the epoch is done: count it before any checkpoint below is written,
                c["epoch"], c["micro_step"] = c["epoch"] + 1, 0  # so a resume never replays it
            else:
                c["micro_step"] = i + 1
            if self.dist.any(self._interrupted) and (i + 1) % tr.grad_accum == 0:
                self._stop_on_ctrl_c()
            if tr.eval_every and c["global_step"] // tr.eval_every > step_before // tr.eval_every:
                self._evaluate_and_keep(bar, job, epoch=round(c["epoch"] + c["micro_step"] / len(batches), 4),
                                        partial=c["micro_step"] != 0)
                self._save("last")
            if tr.save_steps and c["global_step"] // tr.save_steps > step_before // tr.save_steps:
                self._save(f"{STEP_PREFIX}{c['global_step']}")
                if self.run and tr.save_total_limit:
                    prune_step_checkpoints(self.run.checkpoints, tr.save_total_limit)
            if self._finished():
                return

    def _minibatches(self, inputs, weights: dict) -> list:
        """``inputs`` as the method's minibatches (each an optimizer step), the objectives' per-batch
        quantities (advantages) computed over all of it first; [inputs] when there is one. Only RL
        methods split (PPO's num_mini_batches): their inputs are RLInputs (RLInputs.minibatches)."""
        if self.mini_batches <= 1:
            return [inputs]
        if inputs is None:  # this rank has no share of a short batch: it still takes each step with the others
            return [None] * self.mini_batches
        for name in weights:
            self.objectives[name].precompute(inputs)
        parts = inputs.minibatches(self.mini_batches)
        return parts + [None] * (self.mini_batches - len(parts))  # a short last batch: every rank, the same steps

    def _optimizer_step(self, total, logs: dict, bar, job) -> None:
        tr, c = self.config.train, self.counters
        params = [p for p in self.clf.trainable_parameters() if p.grad is not None]
        if params and self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # the true gradients, before clipping
        norm = self.accelerator.clip_grad_norm_(params, tr.max_grad_norm or float("inf")) if params else 0.0
        loss = self.dist.mean(float(total.detach()))  # the same verdict on every rank (grads are synced)
        if math.isfinite(loss) and not math.isfinite(float(norm)) and self.scaler.is_enabled() and params:
            self._lower_loss_scale(float(norm))
            return
        if not (math.isfinite(loss) and math.isfinite(float(norm))):
            self._skip_step(loss, float(norm))
            return
        c["bad_steps_in_a_row"] = 0
        logs["grad_norm"] = float(norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # the gradients are finite (checked above): an optimizer step
            self.scaler.update()
            logs["loss_scale"] = self.scaler.get_scale()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        c["global_step"] += 1
        logs["loss"] = loss
        logs = self.dist.mean_logs(logs)
        logs["lr"] = self.scheduler.get_last_lr()[0]
        if self.run:
            self.run.log_scalars(logs, c["global_step"], "train/")
            self.run.log_step({"step": c["global_step"], "epoch": c["epoch"], **logs})
        bar.update(job, advance=1, loss=logs["loss"], epoch=c["epoch"] + 1)
        if self.on_step is not None:
            self.on_step(logs)

    @contextlib.contextmanager
    def _ctrl_c(self):
        """The first Ctrl-C asks for a stop at the next step boundary (``last`` is saved there);
        a second one interrupts at once."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop_on_ctrl_c(self) -> None:
        c = self.counters
        self._save("last")
        where = f"; resume with: softprompt train --resume {self.run.path}" if self.run else ""
        if self.run:
            self.run.log_line("stop", {"step": c["global_step"], "epoch": c["epoch"]})
        raise TrainingInterrupted(f"interrupted at step {c['global_step']}: checkpoints/last saved{where}")

    def _lower_loss_scale(self, norm: float) -> None:
        """fp16: a finite loss whose scaled gradient overflowed. The step is dropped and the loss scale
        halved (GradScaler's own rule); not a bad step: the next one runs at the lower scale."""
        import logging

        c = self.counters
        self.scaler.update()  # sees the inf found by unscale_: halves the scale
        self.optimizer.zero_grad(set_to_none=True)
        c["loss_scale_skips"] = c.get("loss_scale_skips", 0) + 1
        logging.getLogger("softprompt").info("step %d: fp16 gradients overflowed (norm %s); loss scale lowered "
                                             "to %g", c["global_step"] + 1, norm, self.scaler.get_scale())

    def _skip_step(self, loss: float, norm: float) -> None:
        """A NaN/inf loss or gradient never reaches the weights: drop the gradient, count the step,
        and stop with a clear message after ``train.max_bad_steps`` of them in a row."""
        import logging

        c, limit = self.counters, self.config.train.max_bad_steps
        self.optimizer.zero_grad(set_to_none=True)
        c["skipped_steps"] = c.get("skipped_steps", 0) + 1
        c["bad_steps_in_a_row"] = c.get("bad_steps_in_a_row", 0) + 1
        what = f"loss {loss}, gradient norm {norm}"
        logging.getLogger("softprompt").warning("step %d skipped: %s (%d skipped so far)", c["global_step"] + 1,
                                                what, c["skipped_steps"])
        if self.run:
            self.run.log_line("skip", {"step": c["global_step"] + 1, "epoch": c["epoch"], "loss": loss,
                                       "grad_norm": norm, "skipped_steps": c["skipped_steps"]})
        if limit and c["bad_steps_in_a_row"] >= limit:
            where = f"; checkpoints in {self.run.checkpoints} are intact" if self.run else ""
            raise TrainingDiverged(f"{c['bad_steps_in_a_row']} steps in a row had a non-finite loss or gradient "
                                   f"(last: {what}) after {c['global_step']} good steps; stopping (lower train.lr, "
                                   f"check the data and rewards, or raise train.max_bad_steps){where}")

    def _evaluate_before(self) -> None:
        """The untrained prompt's numbers, from the same evaluation as the final ones."""
        metrics, self.before_rows = self.evaluate()
        self.counters["before"] = metrics
        if hasattr(self.work, "evaluate_base"):
            self.counters["base"] = self.dist.from_main(lambda: self.work.evaluate_base(self.data.eval))
        if self.run:
            self.run.append_epoch_metrics({"epoch": 0, "step": 0, **metrics})
            self.run.log_scalars(metrics, 0, "eval/")
            self.run.write_predictions(self.before_rows, "predictions_before.jsonl")

    def _evaluate_and_keep(self, bar, job, epoch: int, partial: bool = False) -> None:
        c, main = self.counters, self.work.main_metric
        metrics, rows = self.evaluate()
        row = {"epoch": epoch, "step": c["global_step"], **metrics}
        if partial:
            row["partial"] = True
        score = metrics[f"eval_{main}"]
        improved = c["best"] is None or score > c["best"]
        self._last_eval = (c["global_step"], metrics, rows, improved)
        if improved:
            c["best"], c["bad_evals"] = score, 0
            self._save("best")
        else:
            c["bad_evals"] += 1
            patience = self.config.train.early_stopping_patience
            if patience and c["bad_evals"] >= patience:
                c["stopped_early"] = True
        if self.run:
            self.run.append_epoch_metrics(row)
            self.run.log_scalars(metrics, c["global_step"], "eval/")
        bar.update(job, metric=f"{main} {score:.4f} (best {c['best']:.4f})")

    def _save(self, which: str) -> None:
        if self.run:
            reference = getattr(self.work, "reference", None)
            counters = dict(self.counters)
            if self.scaler.is_enabled():  # fp16: the loss scale goes on where it was
                counters["grad_scaler"] = self.scaler.state_dict()
            states = {name: obj.state_dict() for name, obj in self.objectives.items() if hasattr(obj, "state_dict")}
            if any(states.values()):  # e.g. PPO's adaptive KL coefficient and running reward scale
                counters["objectives"] = states
            save_checkpoint(self.run.checkpoints / which, self.clf, self.optimizer, self.scheduler,
                            counters, reference=reference.state() if reference is not None else None)

    def _check_ranks_agree(self) -> None:
        import logging

        sums = self.dist.checksums(self.clf.trainable_parameters())
        full = full_numel(self.clf.model.model)
        held = self.dist.gather(self.dist.backbone_local_numel or full)  # all of it unless sharded
        if self.run:
            write_json(self.run.path / "distributed.json",
                       {"world_size": self.dist.world, "backend": str(self.accelerator.distributed_type),
                        "strategy": self.strategy, "backbone_parameters": full,
                        "backbone_parameters_per_rank": held,
                        "trainable_sha256_per_rank": sums, "ranks_identical": len(set(sums)) == 1})
        if len(set(sums)) > 1:
            logging.getLogger("softprompt").warning("the ranks' trained parameters differ: %s", sums)

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, examples: list | None = None) -> tuple[dict, list[dict]]:
        """The workload's metrics on ``examples`` (default: the eval split), plus speed.
        With several processes rank 0 evaluates and every rank gets its result."""
        return self.dist.from_main(lambda: self.work.evaluate(self.data.eval if examples is None else examples))

    def finish(self) -> dict:
        c = self.counters
        if self.dist.enabled:  # every rank must hold the same prompt: say so in the run folder
            self._check_ranks_agree()
        best = self.run.checkpoints / "best" if self.run else None
        last = self._last_eval
        if last is not None and last[0] == c["global_step"] and last[3]:
            metrics, rows = last[1], last[2]  # the weights now are the best checkpoint's: already evaluated
        else:
            if best is not None and find_checkpoint(best) is not None:  # report the best checkpoint's numbers
                load_checkpoint(best, self.clf, self.optimizer, self.scheduler)
            if self.dist.lockstep:  # every rank evaluates: all with rank 0's (the best) weights
                self.dist.broadcast_params(self.clf.trainable_parameters())
            metrics, rows = self.evaluate()
        summary = {"train_time_sec": c["train_time_sec"], "epochs": c["epoch"], "global_step": c["global_step"],
                   "stopped_early": c["stopped_early"], "skipped_steps": c.get("skipped_steps", 0), **metrics}
        for when in ("before", "base"):  # the untrained prompt; no prompt at all
            summary.update({f"{when}_{k}": v for k, v in (c.get(when) or {}).items()})
        if self.run:
            if c.get("before") and not self.before_rows:  # resumed: the rows are in the run folder
                self.before_rows = self.run.read_jsonl("predictions_before.jsonl")
            self.run.write_predictions(rows)
            self.work.report(self.run, self.before_rows, rows)
            self.run.write_metrics(summary)
            self.run.close()
        return summary

