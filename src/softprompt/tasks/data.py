"""Readers: GLUE folders, CSV/TSV/JSONL tables with a column mapping, and hub datasets.

All readers return a list of :class:`Example`. Text fields are stripped of
surrounding whitespace (SST-2 ends every sentence with a space) and never
truncated; tokenizer truncation happens later. Every problem raises a one-line
:class:`~softprompt.errors.DataError` naming the file and the 1-based line
(counting the header line) and what was expected.
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


def read_table(path: str | Path, text_column: str, label_column: str | None,
               text_pair_column: str | None = None, label_map: Mapping[str, int] | None = None,
               regression: bool = False, num_labels: int | None = None) -> list[Example]:
    """Examples from a ``.csv``, ``.tsv`` or ``.jsonl`` file, choosing columns by name.

    CSV uses standard quoting (``csv.DictReader`` rules, strict); TSV is read with quoting
    off, like GLUE; JSONL holds one JSON object per line. ``label_map`` maps raw label
    strings to class indices; without it labels must be integers (floats when
    ``regression``). ``label_column=None`` reads unlabelled data. ``num_labels``, when
    given, rejects class indices outside ``0..num_labels-1``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"data file {path} has an unsupported type {path.suffix!r}; expected .csv, .tsv or .jsonl")
    if regression and label_map is not None:
        raise ConfigError("label_map is for classification; a regression task reads float labels")
    text = F.read_text(path)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
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
    if label_column is None:
        def to_label(line, raw):
            return None
    elif regression:
        def to_label(line, raw):
            return F.parse_score(path, line, raw, label_column)
    else:
        def to_label(line, raw):
            return F.parse_class(path, line, raw, label_map, num_labels, key=label_column)
    kind = "key" if suffix == ".jsonl" else "column"
    return _examples(path, text, records, text_column, text_pair_column, label_column, to_label, kind)


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


# Column names of the GLUE configs on the hub (datasets' "glue" builder).
_HUB_GLUE = {"sst2": ("sentence", None), "cola": ("sentence", None), "stsb": ("sentence1", "sentence2"),
             "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2")}


def read_hub(name: str, split: str, text_column: str | None = None, text_pair_column: str | None = None,
             label_column: str | None = "label") -> list[Example]:
    """A hub dataset such as ``glue/sst2`` (``<path>/<config>``) through the ``datasets`` library.

    Needs ``pip install datasets`` and a network (or a warm cache). For ``glue/*`` the
    columns are known; for other datasets give ``text_column`` (and ``text_pair_column``).
    Rows whose label is ``-1`` (hidden test labels) get ``label=None``.
    """
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading hub dataset {name!r} needs the datasets library: pip install datasets") from None
    path, _, config = name.partition("/")
    if path == "glue" and config:
        config = glue_name(config)
        text_column = text_column or _HUB_GLUE[config][0]
        text_pair_column = text_pair_column or _HUB_GLUE[config][1]
    if text_column is None:
        raise ConfigError(f"reading hub dataset {name!r} needs text_column (the column holding the input text)")
    split = "validation" if split == "dev" else split
    try:
        rows = datasets.load_dataset(path, config or None, split=split)
    except Exception as e:  # network, offline mode, unknown dataset/split: one line, not a traceback
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"could not load hub dataset {name!r} split {split!r}: {reason}") from None
    source = f"hub dataset {name}[{split}]"
    out = []
    for i, row in enumerate(rows):
        record = dict(row)
        label = record.get(label_column) if label_column is not None else None
        label = None if label == -1 else label  # the hub marks hidden test labels with -1
        out.append(Example(
            text=F.get_text(source, i + 1, record, text_column),
            text_pair=F.get_text(source, i + 1, record, text_pair_column) if text_pair_column else None,
            label=label, index=i,
            extra={k: v for k, v in record.items() if k not in (text_column, text_pair_column, label_column)},
        ))
    if not out:
        raise DataError(f"hub dataset {name!r} split {split!r} has no rows; expected at least one example")
    return out
