"""Where a task's examples come from, decided in one place for every reader (training, evaluation,
preference pairs from a task, the RL prompt sources): :func:`find_source`, then :func:`read_split`.

A split is read from the first of:

1. a file (``task.train_file`` / ``task.eval_file``): ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet``,
   its columns named by ``task.text_column``, ``text_pair_column`` and ``label_column``;
2. ``task.data_dir``: a folder in the GLUE layout (``<dir>/SST-2/train.tsv``);
3. ``task.dataset``: a Hugging Face dataset id (``nyu-mll/glue``, config ``task.dataset_config``) or a
   folder written by ``datasets``' ``save_to_disk``, columns by the same keys;
4. ``$SOFTPROMPT_DATA``: a GLUE-layout folder, when it holds the task's folder;
5. for the GLUE tasks, the hub's ``nyu-mll/glue`` (config: the task) through ``datasets``: downloaded
   once, then read from its cache (only the cache with ``HF_HUB_OFFLINE=1``).

When none of them has the data, the error says which key or command gets it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, closest
from .base import get_task
from .data import GLUE_FORMATS, HUB_GLUE, HUB_GLUE_IDS, Example, read_dataset, read_glue, read_table

ENV = "SOFTPROMPT_DATA"
_MAPPING_KEYS = {"text_column": "text", "text_pair_column": None, "label_column": "label", "label_map": None}


@dataclass(frozen=True)
class DataSource:
    """One place to read a task's splits from: a file (``{split}`` in its name is the split), a GLUE-layout
    folder, or a ``datasets`` dataset (hub id or ``save_to_disk`` folder) with its config."""

    kind: str  # "file", "glue_dir" or "dataset"
    location: str
    config: str | None = None  # a dataset's config name
    origin: str = ""  # what chose it: the key (task.data_dir, ...), SOFTPROMPT_DATA, or "default"
    section: str = "task"  # the config section whose keys would give another source, for messages

    def describe(self) -> str:
        what = {"file": "file", "glue_dir": "GLUE folder", "dataset": "dataset"}[self.kind]
        config = f" ({self.config})" if self.config else ""
        return f"{what} {self.location}{config}, from {self.origin}"

    def to_dict(self) -> dict:
        """What a run's ``data.json`` records."""
        return {"kind": self.kind, "location": self.location, "config": self.config, "origin": self.origin}


def find_source(task_name: str, file: str | Path | None = None, data_dir: str | Path | None = None,
                dataset: str | None = None, dataset_config: str | None = None, key: str = "task") -> DataSource:
    """Where task ``task_name`` is read from (the order is in this module's docstring). ``key`` is the
    config section whose keys the messages name (``task``, ``prompts``)."""
    if file:
        return DataSource("file", str(file), origin="file")
    if data_dir and dataset:
        raise ConfigError(f"{key}.data_dir={data_dir} and {key}.dataset={dataset} are both set; give one "
                          f"(set the other to null)")
    if data_dir:
        return DataSource("glue_dir", str(data_dir), origin=f"{key}.data_dir")
    task = get_task(task_name)
    if dataset:
        config = dataset_config or (task.name if dataset in HUB_GLUE_IDS and task.name in GLUE_FORMATS else None)
        return DataSource("dataset", str(dataset), config, origin=f"{key}.dataset")
    if task.name not in GLUE_FORMATS:
        files = f"{key}.train_file and {key}.eval_file" if key == "task" else f"{key}.file"
        raise ConfigError(f"task {task.name!r} has no data: give {files} (.csv/.tsv/.jsonl/.parquet), {key}.dataset "
                          f"(a hub id or a save_to_disk folder) or {key}.data_dir")
    folder = GLUE_FORMATS[task.name].folder
    env = os.environ.get(ENV)
    if env and (Path(env) / folder).is_dir():
        return DataSource("glue_dir", env, origin=ENV)
    return DataSource("dataset", HUB_GLUE, task.name, origin="default", section=key)


def read_split(source: DataSource, task_name: str, split: str, **column_mapping) -> list[Example]:
    """One split of a task's examples from ``source``, labels checked against the task.

    A file or dataset's columns: ``text_column`` (default ``"text"``; a GLUE task's dataset with GLUE's
    columns instead, like the hub's, is read with those), ``text_pair_column`` (needed by a pair task), ``label_column``
    (default ``"label"``; None for unlabelled data) and ``label_map`` (raw label -> class; without it a
    classification label is a class index or one of the task's label names).
    """
    task = get_task(task_name)
    unknown = sorted(set(column_mapping) - set(_MAPPING_KEYS))
    if unknown:
        raise ConfigError(f"unknown load_split option {unknown[0]!r}{closest(unknown[0], _MAPPING_KEYS)}; "
                          f"expected {', '.join(_MAPPING_KEYS)}")
    opts = {**_MAPPING_KEYS, **column_mapping}
    text_column, pair_column = opts["text_column"], opts["text_pair_column"]
    label_column, label_map = opts["label_column"], opts["label_map"]
    if source.kind == "glue_dir":
        return read_glue(task.name, split, source.location)
    # a GLUE task's dataset without a "text" column, columns not mapped: GLUE's own (the hub's, and copies of it)
    glue_task = task.name if (source.kind == "dataset" and task.name in GLUE_FORMATS and text_column == "text"
                              and pair_column is None) else None
    if task.is_pair and pair_column is None and glue_task is None:
        raise ConfigError(f"task {task.name!r} takes sentence pairs; set text_pair_column")
    if task.regression:
        label_map = None
    elif label_map is None:
        label_map = task.label_map()
    else:
        bad = {k: v for k, v in label_map.items() if not (isinstance(v, int) and 0 <= v < task.num_labels)}
        if bad:
            raise ConfigError(f"label_map {bad!r} maps outside task {task.name!r}'s classes 0..{task.num_labels - 1}")
    columns = dict(text_column=text_column, text_pair_column=pair_column, label_column=label_column,
                   label_map=label_map, regression=task.regression, num_labels=task.num_labels or None)
    if source.kind == "file":
        return read_table(Path(source.location.replace("{split}", split)), **columns)
    try:
        return read_dataset(source.location, split, source.config, glue_task=glue_task, **columns)
    except DataError as e:
        if source.origin != "default":
            raise
        raise DataError(no_data_message(task.name, source, str(e))) from None


def no_data_message(task_name: str, source: DataSource, reason: str) -> str:
    """The error when a GLUE task has no data anywhere: what was looked for, and how to get it."""
    task, key = get_task(task_name), source.section
    folder = GLUE_FORMATS[task.name].folder
    env = os.environ.get(ENV)
    env = f"{ENV}={env} has no {folder} folder" if env else f"{ENV} is not set"
    offline = " (HF_HUB_OFFLINE=1: only the datasets cache is read)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return (f"no data for task {task.name!r}: {key}.data_dir and {key}.dataset are not set, {env}, and the hub "
            f"dataset {HUB_GLUE} ({task.name}) is not available{offline}: {reason.removeprefix('could not load ')}. "
            f"Point {key}.data_dir=DIR (or the "
            f"environment variable {ENV}=DIR) at a GLUE-layout folder (DIR/{folder}/train.tsv, dev.tsv), set "
            f"{key}.dataset to a hub id or a save_to_disk folder, or download GLUE once with network: python -c "
            f"\"import datasets; datasets.load_dataset('{HUB_GLUE}', '{task.name}')\"")


def load_split(task_name: str, split: str, data_dir: str | Path | None = None, path: str | Path | None = None,
               dataset: str | None = None, dataset_config: str | None = None, **column_mapping) -> list[Example]:
    """One split of a task's examples, labels checked against the task: from the file ``path`` (a
    ``.csv``/``.tsv``/``.jsonl``/``.parquet`` file; ``{split}`` in it is replaced by the split name,
    ``data/my_{split}.jsonl``), else the GLUE-layout folder ``data_dir`` (``<data_dir>/SST-2/dev.tsv``),
    else ``dataset`` (a hub id or a ``save_to_disk`` folder), else ``$SOFTPROMPT_DATA``, else the hub's
    GLUE (see :func:`find_source`). ``column_mapping``: see :func:`read_split`."""
    source = find_source(task_name, file=path, data_dir=data_dir, dataset=dataset, dataset_config=dataset_config)
    return read_split(source, task_name, split, **column_mapping)
