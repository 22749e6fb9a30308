"""Evaluate a classifier on a task's examples: metrics, loss, speed and predictions.

Used by the trainer after each epoch and by ``softprompt eval`` (also on the untouched
base model, RLPT's ``--use-base-model``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..errors import SoftPromptError
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
    from ..modeling.kernels import packed_linears

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


def write_predictions(rows: list[dict], path: Path) -> None:
    import json

    from ..storage import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                for r in rows)))


def evaluate_tasks(tasks: list[str], adapter: str | None = None, model: str | None = None,
                   data_dir: str | None = None, split: str = "dev", max_samples: int | None = None,
                   batch_size: int = 32, save_predictions: str | None = None) -> dict[str, dict]:
    """Evaluate a trained adapter (or run folder), or the base model alone, on several tasks."""
    from ..tasks import load_split
    from .assemble import load_trained_classifier

    if adapter is None and model is None:
        raise SoftPromptError("give a run folder / adapter directory, or --model for the base model alone")
    results, sp_model = {}, None
    for name in tasks:
        classifier, task, config = load_trained_classifier(adapter, name, model=model, sp_model=sp_model)
        sp_model = classifier.model
        data_dir = data_dir or config.task.data_dir
        examples = load_split(task.name, split, data_dir=data_dir)
        if max_samples:
            examples = examples[:max_samples]
        metrics, rows = evaluate(classifier, task, examples, batch_size, config.task.max_length)
        results[task.name] = metrics
        if save_predictions:
            write_predictions(rows, Path(save_predictions) / f"{task.name}.jsonl")
    if save_predictions:
        from ..storage import write_json

        write_json(Path(save_predictions) / "metrics.json", results)
    return results
