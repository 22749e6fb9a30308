"""``softprompt eval``: a trained run (or the base model alone) on several GLUE tasks."""

from __future__ import annotations

from pathlib import Path

from ..errors import SoftPromptError
from ..runs.folder import write_predictions
from ..runs.loading import load_trained_classifier
from ..storage import write_json
from ..tasks import load_split
from ..training.evaluation import evaluate


def evaluate_tasks(tasks: list[str], adapter: str | None = None, model: str | None = None,
                   data_dir: str | None = None, split: str = "dev", max_samples: int | None = None,
                   batch_size: int = 32, save_predictions: str | None = None) -> dict[str, dict]:
    """Evaluate a trained adapter (or run folder), or the base model alone, on several tasks. Each
    task's data: ``data_dir`` (a GLUE-layout folder), else where the run read it (its ``task.data_dir``;
    its ``task.dataset`` for the task it trained on), else ``$SOFTPROMPT_DATA``, else the hub's GLUE."""
    if adapter is None and model is None:
        raise SoftPromptError("give a run folder / adapter directory, or --model for the base model alone")
    results, sp_model = {}, None
    for name in tasks:
        classifier, task, config = load_trained_classifier(adapter, name, model=model, sp_model=sp_model)
        sp_model = classifier.model
        t = config.task
        own = t.name == task.name and not data_dir  # the run's own task: the dataset it trained on too
        examples = load_split(task.name, split, data_dir=data_dir or t.data_dir, dataset=t.dataset if own else None,
                              dataset_config=t.dataset_config if own else None)
        if max_samples:
            examples = examples[:max_samples]
        metrics, rows = evaluate(classifier, task, examples, batch_size, config.task.max_length)
        results[task.name] = metrics
        if save_predictions:
            write_predictions(rows, Path(save_predictions) / f"{task.name}.jsonl")
    if save_predictions:
        write_json(Path(save_predictions) / "metrics.json", results)
    return results
