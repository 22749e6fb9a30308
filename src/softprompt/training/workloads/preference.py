"""Preference pairs for a comparative reward model: chosen and rejected rows in one batch."""

from __future__ import annotations

import time

import torch

from ...objectives import StepInputs
from ...objectives.pairwise import pairwise_loss
from ...storage import write_json
from .base import count_overlong


class PreferenceWork:
    """Preference pairs for a comparative reward model: chosen and rejected rows in one batch."""

    kind = "preference"
    evaluate_before = False
    main_metric = "pairwise_accuracy"

    def __init__(self, config, reward_model, data_info: dict | None = None):
        self.config, self.module, self.data_info = config, reward_model, data_info or {}

    def count_overlong(self, train: list, evaluation: list) -> dict:
        """Rows whose ``context [SEP] response`` exceeds ``preferences.max_length`` (the context's start goes)."""
        rm = self.module
        texts = {name: [rm.text(p.context, r) for p in pairs for r in (p.chosen, p.rejected)]
                 for name, pairs in (("train", train), ("eval", evaluation))}
        self.data_info.update(count_overlong(rm.tokenizer, texts, rm.max_length, "preferences.max_length", "rows"))
        return self.data_info

    def prepare(self, objectives: dict, train: list) -> None:
        pass

    def batch(self, pairs: list) -> dict:
        contexts = [p.context for p in pairs] * 2
        return self.module.batch(contexts, [p.chosen for p in pairs] + [p.rejected for p in pairs])

    def inputs(self, pairs: list, epoch: int, step: int, device) -> tuple[StepInputs, dict]:
        batch = {k: v.to(device) for k, v in self.batch(pairs).items()}
        return StepInputs(batch, self.module, epoch, step), {}

    @torch.no_grad()
    def evaluate(self, pairs: list) -> tuple[dict, list[dict]]:
        start = time.perf_counter()
        was_training = self.module.training
        self.module.eval()
        size = max(1, self.config.train.eval_batch // 2)
        chosen, rejected = [], []
        for b in range(0, len(pairs), size):
            scores = self.module.scores(self.batch(pairs[b:b + size])).squeeze(-1).float().cpu()
            n = len(scores) // 2
            chosen.append(scores[:n])
            rejected.append(scores[n:])
        self.module.train(was_training)
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        diff = chosen - rejected
        runtime = time.perf_counter() - start
        metrics = {"eval_pairwise_accuracy": float((diff > 0).float().mean()),
                   "eval_loss": float(pairwise_loss(chosen, rejected)),
                   "eval_margin": float(diff.mean()),
                   "eval_runtime": runtime, "eval_samples_per_second": len(pairs) / runtime}
        rows = [{"index": p.index, "line": p.line, "context": p.context, "chosen": p.chosen, "rejected": p.rejected,
                 "score_chosen": float(c), "score_rejected": float(r), "correct": bool(c > r)}
                for p, c, r in zip(pairs, chosen, rejected)]
        return metrics, rows

    def report(self, run, before_rows, after_rows) -> None:
        write_json(run.path / "data.json", self.data_info)  # files read, pairs used, rows skipped
