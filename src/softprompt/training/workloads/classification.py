"""Labelled examples for a classifier (verbalizer or embedding + head): tokenized batches, task metrics."""

from __future__ import annotations

from ...objectives import StepInputs
from ...storage import write_json
from ..evaluation import evaluate, make_batch
from .base import count_overlong


class ClassificationWork:
    kind = "classification"
    evaluate_before = False

    def __init__(self, config, task, classifier):
        self.config, self.task, self.module = config, task, classifier
        self.main_metric = task.main_metric

    def prepare(self, objectives: dict, train: list) -> None:
        for objective in objectives.values():
            objective.prepare([e.label for e in train])

    def count_overlong(self, train: list, evaluation: list) -> dict:
        """Examples longer than ``task.max_length`` tokens (cut from the left), counted once."""
        self.data_info = count_overlong(self.module.tokenizer, {"train": [self.task.format(e) for e in train],
                                                                "eval": [self.task.format(e) for e in evaluation]},
                                        self.config.task.max_length, "task.max_length", "examples")
        return self.data_info

    def inputs(self, examples: list, epoch: int, step: int, device) -> tuple[StepInputs, dict]:
        batch = make_batch(self.module, self.task, examples, self.config.task.max_length)
        return StepInputs({k: v.to(device) for k, v in batch.items()}, self.module, epoch, step), {}

    def evaluate(self, examples: list) -> tuple[dict, list[dict]]:
        return evaluate(self.module, self.task, examples, self.config.train.eval_batch, self.config.task.max_length,
                        self.config.objectives()["mle"])

    def report(self, run, before_rows, after_rows) -> None:
        if getattr(self, "data_info", None):
            write_json(run.path / "data.json", self.data_info)  # examples read, and how many were truncated
