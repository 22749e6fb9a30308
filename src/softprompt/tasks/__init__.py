"""Tasks: data readers, task definitions (template, label words, metric) and metrics."""

from ..metrics.glue import METRICS, accuracy, f1_accuracy, matthews, pearson_spearman
from . import glue as _glue  # noqa: F401  (registers the six GLUE tasks)
from .base import TASKS, Task, get_task, load_split, register_task
from .data import GLUE_FORMATS, Example, glue_name, read_glue, read_hub, read_table

__all__ = [
    "GLUE_FORMATS", "METRICS", "TASKS", "Example", "Task", "accuracy", "f1_accuracy", "get_task", "glue_name",
    "load_split", "matthews", "pearson_spearman", "read_glue", "read_hub", "read_table", "register_task",
]
