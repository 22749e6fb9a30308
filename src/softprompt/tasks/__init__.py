"""Tasks: data readers, task definitions (template, label words, metric) and metrics."""

from ..metrics.glue import METRICS, accuracy, f1_accuracy, matthews, pearson_spearman
from . import glue as _glue  # noqa: F401  (registers the six GLUE tasks)
from .base import TASKS, Task, get_task, register_task
from .data import GLUE_FORMATS, Example, glue_name, read_dataset, read_glue, read_hub, read_table
from .sources import DataSource, find_source, load_split, read_split

__all__ = [
    "GLUE_FORMATS", "METRICS", "TASKS", "DataSource", "Example", "Task", "accuracy", "f1_accuracy", "find_source",
    "get_task", "glue_name", "load_split", "matthews", "pearson_spearman", "read_dataset", "read_glue", "read_hub",
    "read_split", "read_table", "register_task",
]
