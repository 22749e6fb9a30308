"""Evaluate a classifier on a task's examples: metrics, loss, speed and predictions.

Used by the trainer after each epoch and by ``softprompt eval`` (also on the untouched
base model, RLPT's ``--use-base-model``).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from ..errors import SoftPromptError
from ..modeling.kernels import packed_linears
from ..objectives import OBJECTIVES, StepInputs
from ..objectives.mle import MLEConfig


def make_batch(classifier, task, examples: list, max_length: int | None) -> dict:
    batch = classifier.tokenize([task.format(e) for e in examples], max_length)
    dtype = torch.float if task.regression else torch.long
    labels = [e.label if e.label is not None else 0 for e in examples]
    batch["labels"] = torch.tensor(labels, dtype=dtype, device=classifier.model.device)
    return batch


@torch.no_grad()
def evaluate(classifier, task, examples: list, batch_size: int = 32, max_length: int | None = 128,
             mle: MLEConfig | None = None) -> tuple[dict, list[dict]]:
    """(metrics, prediction rows). Batches are formed by length so little compute goes to padding."""
    if not examples:
        raise SoftPromptError(f"no examples to evaluate for task {task.name!r}")
    was_training = classifier.training
    classifier.eval()
    # eval_loss is the plain cross-entropy, whatever class weights training used
    loss_fn = OBJECTIVES.get("mle")(dataclasses.replace(mle, class_weights=None) if mle else MLEConfig())
    texts = [task.format(e) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(texts[i]))
    preds, scores, loss_sum, steps = {}, {}, 0.0, 0
    start = time.perf_counter()
    with packed_linears(classifier.model.model, batch_hint=batch_size):
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            inputs = StepInputs(make_batch(classifier, task, [examples[i] for i in idx], max_length), classifier)
            loss_sum += loss_fn(inputs).loss.item() * len(idx)
            for i, p, s in zip(idx, classifier.predict(inputs.scores()).tolist(), inputs.scores().tolist()):
                preds[i], scores[i] = p, s
            steps += 1
    runtime = time.perf_counter() - start
    classifier.train(was_training)
    predicted = [preds[i] for i in range(len(examples))]
    metrics = {f"eval_{k}": v for k, v in task.compute_metrics([e.label for e in examples], predicted).items()}
    metrics.update({"eval_loss": loss_sum / len(examples), "eval_runtime": runtime,
                    "eval_samples_per_second": len(examples) / runtime, "eval_steps_per_second": steps / runtime})
    rows = [{"index": e.index, "text": texts[i], "gold": e.label, "predicted": predicted[i], "scores": scores[i]}
            for i, e in enumerate(examples)]
    return metrics, rows
