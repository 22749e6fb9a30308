"""Readers: GLUE folders, CSV/TSV/JSONL/Parquet tables with a column mapping, and datasets of the
``datasets`` library (a hub id, or a folder written by ``save_to_disk``).

All readers return a list of :class:`Example`. Text fields are stripped of
surrounding whitespace (SST-2 ends every sentence with a space) and never
truncated; tokenizer truncation happens later. Every problem raises a one-line
:class:`~softprompt.errors.DataError` naming the file and the 1-based line
(counting the header line; the row of a Parquet file or dataset) and what was expected.
Which of these a task reads is decided in one place: :mod:`.sources`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, closest
from . import files as F


@dataclass
class Example:
    text: str
    text_pair: str | None = None
    label: int | float | None = None  # class index, or a float for regression; None when unlabelled
    index: int = 0  # row number in the split (0-based, data rows only)
    extra: dict = field(default_factory=dict)  # the row's other columns (ids, genre, source, ...)


def generation_input(example):
    """What the policy continues for ``example``: its conversation (``extra["messages"]``, from a
    prompt file in TRL's conversational format) when it has one, else its text."""
    return example.extra.get("messages") or example.text


def example_field(example, name: str):
    """The value of field ``name`` of an Example (an attribute, else a column in ``extra``) or of a
    dict; None when it has none."""
    if isinstance(example, dict):
        return example.get(name)
    value = getattr(example, name, None)
    return value if value is not None else (getattr(example, "extra", None) or {}).get(name)


@dataclass(frozen=True)
class GlueFormat:
    """How one GLUE task's ``train.tsv`` / ``dev.tsv`` are laid out."""

    folder: str
    columns: tuple[str, ...]  # header names the reader needs; for a headerless file, every column by position
    text: str
    text_pair: str | None
    label: str
    labels: Mapping[str, int] | None  # raw label -> class index; None means a 0..5 float score (STS-B)
    header: bool = True


_BINARY = {"0": 0, "1": 1}
GLUE_FORMATS: dict[str, GlueFormat] = {
    "sst2": GlueFormat("SST-2", ("sentence", "label"), "sentence", None, "label", _BINARY),
    "cola": GlueFormat("CoLA", ("source", "label", "original_judgement", "sentence"), "sentence", None, "label",
                       _BINARY, header=False),
    "stsb": GlueFormat("STS-B", ("sentence1", "sentence2", "score"), "sentence1", "sentence2", "score", None),
    "mrpc": GlueFormat("MRPC", ("Quality", "#1 String", "#2 String"), "#1 String", "#2 String", "Quality", _BINARY),
    "rte": GlueFormat("RTE", ("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label",
                      {"entailment": 0, "not_entailment": 1}),
    "wnli": GlueFormat("WNLI", ("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label",
                       _BINARY),
}
STSB_RANGE = (0.0, 5.0)
_SPLITS = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev"}


def glue_name(task: str) -> str:
    """Canonical GLUE key (``sst2``, ``cola``, ...) for ``SST-2``, ``sst_2``, ``STS-B`` and the like."""
    key = task.lower().replace("-", "").replace("_", "")
    if key not in GLUE_FORMATS:
        raise ConfigError(f"unknown GLUE task {task!r}{closest(key, GLUE_FORMATS)}; "
                          f"known: {', '.join(GLUE_FORMATS)}")
    return key


def glue_path(task: str, split: str, root: str | Path) -> Path:
    if split not in _SPLITS:
        raise ConfigError(f"unknown GLUE split {split!r}{closest(split, _SPLITS)}; expected 'train' or 'dev' "
                          "(GLUE keeps its test labels private)")
    return Path(root) / GLUE_FORMATS[glue_name(task)].folder / f"{_SPLITS[split]}.tsv"


def read_glue(task: str, split: str, root: str | Path) -> list[Example]:
    """One split of a GLUE task from ``<root>/<TASK>/{train,dev}.tsv`` (the classic download layout)."""
    fmt = GLUE_FORMATS[glue_name(task)]
    path = glue_path(task, split, root)
    if not Path(root).is_dir():
        raise DataError(f"GLUE folder {root} does not exist; expected <root>/{fmt.folder}/{path.name}")
    text = F.read_text(path, what="GLUE file")
    rows = F.read_rows(path, text, "\t", csv.QUOTE_NONE)
    if fmt.header:
        if not rows:
            raise DataError(f"{F.where(path, 1)}: file is empty; expected a header line with columns "
                            f"{F.quoted(fmt.columns)}")
        (_, header), rows = rows[0], rows[1:]
        records = F.table_records(path, rows, header, list(fmt.columns), "tab")
    else:
        records = F.row_dicts(path, rows, list(fmt.columns), "tab")
    if fmt.labels is None:
        low, high = STSB_RANGE

        def to_label(line, raw):
            return F.parse_score(path, line, raw, fmt.label, low, high)
    else:
        def to_label(line, raw):
            return F.parse_class(path, line, raw, fmt.labels, key=fmt.label)
    return _examples(path, text, records, fmt.text, fmt.text_pair, fmt.label, to_label)


_TABLES = (".csv", ".tsv", ".jsonl", ".parquet")


def read_table(path: str | Path, text_column: str, label_column: str | None,
               text_pair_column: str | None = None, label_map: Mapping[str, int] | None = None,
               regression: bool = False, num_labels: int | None = None) -> list[Example]:
    """Examples from a ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file, choosing columns by name.

    CSV uses standard quoting (``csv.DictReader`` rules, strict); TSV is read with quoting
    off, like GLUE; JSONL holds one JSON object per line; Parquet is read with pyarrow (what
    ``datasets`` reads it with). ``label_map`` maps raw label strings to class indices; without
    it labels must be integers (floats when ``regression``). ``label_column=None`` reads
    unlabelled data. ``num_labels``, when given, rejects class indices outside ``0..num_labels-1``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TABLES:
        raise DataError(f"data file {path} has an unsupported type {path.suffix!r}; expected .csv, .tsv, .jsonl "
                        "or .parquet")
    to_label = label_parser(path, label_column, label_map, regression, num_labels)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    if suffix == ".parquet":
        columns, rows = _read_parquet(path)
        return rows_to_examples(path, columns, rows, text_column, text_pair_column, label_column, to_label)
    text = F.read_text(path)
    if suffix == ".jsonl":
        records = F.read_json_lines(path, text)
    else:
        delimiter, quoting = ("\t", csv.QUOTE_NONE) if suffix == ".tsv" else (",", csv.QUOTE_MINIMAL)
        rows = F.read_rows(path, text, delimiter, quoting)
        if not rows:
            raise DataError(f"{F.where(path, 1)}: file is empty; expected a header line with columns "
                            f"{F.quoted(wanted)}")
        (_, header), rows = rows[0], rows[1:]
        header = [h.strip() for h in header]
        records = F.table_records(path, rows, header, wanted, "tab" if suffix == ".tsv" else "comma")
    kind = "key" if suffix == ".jsonl" else "column"
    return _examples(path, text, records, text_column, text_pair_column, label_column, to_label, kind)


def label_parser(where, label_column: str | None, label_map: Mapping[str, int] | None = None,
                 regression: bool = False, num_labels: int | None = None) -> Callable:
    """``(line, raw) -> label`` for one source: None when unlabelled, a float for regression, else a
    class index (through ``label_map`` when given)."""
    if regression and label_map is not None:
        raise ConfigError("label_map is for classification; a regression task reads float labels")
    if label_column is None:
        return lambda line, raw: None
    if regression:
        return lambda line, raw: F.parse_score(where, line, raw, label_column)
    return lambda line, raw: F.parse_class(where, line, raw, label_map, num_labels, key=label_column)


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow (installed with datasets): pip install datasets") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's errors for a file that is not Parquet: one line
        raise DataError(f"{path}: not a readable Parquet file ({_reason(e)})") from None
    return table.column_names, table.to_pylist()


def rows_to_examples(where, columns: list[str], rows, text_key: str, pair_key: str | None,
                     label_key: str | None, to_label: Callable, hidden_label=None) -> list[Example]:
    """Examples from rows that are dicts (a Parquet file, a dataset), the columns checked first; a
    label equal to ``hidden_label`` (the hub's -1 for a hidden test label) becomes None."""
    missing = [c for c in (text_key, pair_key, label_key) if c is not None and c not in columns]
    if missing:
        raise DataError(f"{where}: missing column {F.quoted(missing)}; found columns {F.quoted(columns)}")
    out = []
    for i, record in enumerate(rows):
        line = f"row {i + 1}"
        raw = record[label_key] if label_key is not None else None
        out.append(Example(
            text=F.get_text(where, line, record, text_key),
            text_pair=F.get_text(where, line, record, pair_key) if pair_key is not None else None,
            label=None if hidden_label is not None and raw == hidden_label else to_label(line, raw),
            index=i, extra={k: v for k, v in record.items() if k not in (text_key, pair_key, label_key)},
        ))
    if not out:
        raise DataError(f"{where}: no data rows; expected at least one example")
    return out


def _reason(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _examples(path: Path, text: str, records: list[tuple[int, dict]], text_key: str, pair_key: str | None,
              label_key: str | None, to_label: Callable, kind: str = "column") -> list[Example]:
    if not records:
        line = text.count("\n") + (0 if text.endswith("\n") or not text else 1) + 1
        raise DataError(f"{F.where(path, line)}: no data rows; expected at least one example")
    used = {text_key, pair_key, label_key}
    out = []
    for i, (line, rec) in enumerate(records):
        label = to_label(line, F.get_field(path, line, rec, label_key, kind)) if label_key is not None else None
        out.append(Example(
            text=F.get_text(path, line, rec, text_key, kind),
            text_pair=F.get_text(path, line, rec, pair_key, kind) if pair_key is not None else None,
            label=label, index=i, extra={k: v for k, v in rec.items() if k not in used},
        ))
    return out


def detokenize(text: str) -> str:
    """Undo the PTB-style tokenization of the GLUE files (``it 's`` -> ``it's``)."""
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'m|'d)\b", r"\1", text)
    text = re.sub(r" ([,.;:!?])", r"\1", text)
    text = text.replace("-lrb- ", "(").replace(" -rrb-", ")").replace("( ", "(").replace(" )", ")")
    return text[:1].upper() + text[1:]


# The GLUE dataset on the hub (datasets' "glue" builder) and the columns of its configs.
HUB_GLUE = "nyu-mll/glue"
HUB_GLUE_IDS = {"glue", HUB_GLUE}
_HUB_GLUE = {"sst2": ("sentence", None), "cola": ("sentence", None), "stsb": ("sentence1", "sentence2"),
             "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2")}
_DATASET_SPLITS = {"dev": "validation", "valid": "validation", "val": "validation"}


def hub_glue_columns(task: str) -> tuple[str, str | None]:
    """(text column, text pair column) of a GLUE task in the hub's GLUE dataset."""
    return _HUB_GLUE[glue_name(task)]


def _datasets(what: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading {what} needs the datasets library: pip install datasets") from None
    return datasets


def open_dataset(name: str, split: str, config: str | None = None):
    """(rows, a name for messages) of one split of a ``datasets`` dataset: a folder written by
    ``save_to_disk``, else a hub id (or a folder of data files) read with ``load_dataset``, which
    reads its cache only when ``HF_HUB_OFFLINE=1``. ``dev`` is the ``validation`` split of a dataset
    that has no ``dev``."""
    datasets = _datasets(f"dataset {name!r}")
    folder = Path(name)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        try:
            data = datasets.load_from_disk(str(folder))
        except Exception as e:  # a damaged folder: one line
            raise DataError(f"dataset folder {name} cannot be read: {_reason(e)}") from None
        if not isinstance(data, datasets.DatasetDict):
            raise DataError(f"dataset folder {name} holds a single unnamed split; expected a DatasetDict saved with "
                            "save_to_disk, e.g. DatasetDict(train=..., validation=...)")
        chosen = split if split in data else _DATASET_SPLITS.get(split)
        if chosen not in data:
            raise DataError(f"dataset folder {name} has no split {split!r}; its splits: {', '.join(data)}")
        return data[chosen], f"dataset {name} [{chosen}]"
    chosen = _DATASET_SPLITS.get(split, split)
    where = f"dataset {name}" + (f" ({config})" if config else "") + f" [{chosen}]"
    try:
        rows = datasets.load_dataset(name, config, split=chosen)
    except Exception as e:  # network, offline mode, unknown dataset/split: one line, not a traceback
        raise DataError(f"could not load {where}: {_reason(e)}") from None
    return rows, where


def read_dataset(name: str, split: str, config: str | None = None, text_column: str = "text",
                 text_pair_column: str | None = None, label_column: str | None = "label",
                 label_map: Mapping[str, int] | None = None, regression: bool = False,
                 num_labels: int | None = None, glue_task: str | None = None) -> list[Example]:
    """One split of a ``datasets`` dataset (see :func:`open_dataset`), columns chosen by name as in
    :func:`read_table`. Rows whose label is ``-1`` (the hub's hidden test labels) get ``label=None``.
    ``glue_task``: a dataset without ``text_column`` is read with that GLUE task's own columns
    (``sentence``; ``sentence1``, ``sentence2``), as in the hub's GLUE and copies of it."""
    rows, where = open_dataset(name, split, config)
    if glue_task is not None and text_column not in rows.column_names \
            and hub_glue_columns(glue_task)[0] in rows.column_names:
        text_column, text_pair_column = hub_glue_columns(glue_task)
    to_label = label_parser(where, label_column, label_map, regression, num_labels)
    return rows_to_examples(where, list(rows.column_names), rows, text_column, text_pair_column, label_column,
                            to_label, hidden_label=-1)


def read_hub(name: str, split: str, text_column: str | None = None, text_pair_column: str | None = None,
             label_column: str | None = "label") -> list[Example]:
    """A hub dataset named ``<path>/<config>`` such as ``glue/sst2`` (see :func:`read_dataset`).

    For ``glue/*`` the columns are known; for other datasets give ``text_column`` (and
    ``text_pair_column``). Labels are class indices (STS-B: floats).
    """
    path, _, config = name.partition("/")
    regression = False
    if path in HUB_GLUE_IDS and config:
        config = glue_name(config)
        text_column = text_column or _HUB_GLUE[config][0]
        text_pair_column = text_pair_column or _HUB_GLUE[config][1]
        regression = config == "stsb"
    if text_column is None:
        raise ConfigError(f"reading hub dataset {name!r} needs text_column (the column holding the input text)")
    return read_dataset(path, split, config or None, text_column, text_pair_column, label_column,
                        regression=regression)
