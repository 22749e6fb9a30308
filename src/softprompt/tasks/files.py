"""Low-level reading shared by the readers: decoding, rows with line numbers, label parsing.

Every problem becomes a one-line :class:`DataError` of the form
``<file>, line <n>: <what is wrong>; <what was expected>``. Line numbers are
1-based, as in an editor, and count the header line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import DataError

# Large enough for any real field; csv's default (131,072 chars) would refuse long documents.
_FIELD_LIMIT = 2**31 - 1


def where(path: str | Path, line: int | str) -> str:
    """``<file>, line <n>``; a ``line`` given as text (``"row 3"`` of a Parquet file or dataset) is used as is."""
    return f"{path}, {line}" if isinstance(line, str) else f"{path}, line {line}"


def quoted(names) -> str:
    return ", ".join(repr(n) for n in names)


def read_text(path: str | Path, what: str = "data file") -> str:
    """The whole file as text (UTF-8, optional BOM removed); bad bytes name the file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    data = path.read_bytes()
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{where(path, line)}: byte {data[e.start]:#04x} is not valid UTF-8 ({e.reason}); "
            "expected a UTF-8 text file"
        ) from None


@contextlib.contextmanager
def _no_field_limit() -> Iterator[None]:
    old = csv.field_size_limit(_FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_rows(path: str | Path, text: str, delimiter: str, quoting: int) -> list[tuple[int, list[str]]]:
    """(first line of the record, fields) for every non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=quoting != csv.QUOTE_NONE)
    rows: list[tuple[int, list[str]]] = []
    quoting_hint = ("plain tab-separated fields" if quoting == csv.QUOTE_NONE
                    else 'standard CSV quoting (a quoted field closed before the next comma, inner quotes doubled)')
    with _no_field_limit():
        end = 0
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if row:  # csv gives [] for a blank line
                    rows.append((start, row))
        except csv.Error as e:
            raise DataError(f"{where(path, end + 1)}: malformed row ({e}); expected {quoting_hint}") from None
    return rows


def read_json_lines(path: str | Path, text: str) -> list[tuple[int, dict]]:
    """(line, object) for every non-blank line of a JSON Lines file."""
    records = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where(path, n)}: not valid JSON ({e.msg} at column {e.colno}); "
                            "expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where(path, n)}: found a JSON {type(obj).__name__}; expected one JSON object per line")
        records.append((n, obj))
    return records


def table_records(path: str | Path, rows: list[tuple[int, list[str]]], header: list[str],
                  required: list[str], sep: str) -> list[tuple[int, dict]]:
    """Check the header has ``required`` and every row its width; rows become dicts."""
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{where(path, 1)}: missing column {quoted(missing)}; found columns {quoted(header)}")
    return row_dicts(path, rows, header, sep)


def row_dicts(path: str | Path, rows: list[tuple[int, list[str]]], names: list[str],
              sep: str) -> list[tuple[int, dict]]:
    out = []
    for line, fields in rows:
        if len(fields) != len(names):
            few = "too few" if len(fields) < len(names) else "too many"
            raise DataError(f"{where(path, line)}: {few} fields, found {len(fields)}; expected {len(names)} "
                            f"{sep}-separated fields ({quoted(names)})")
        out.append((line, dict(zip(names, fields))))
    return out


def get_field(path: str | Path, line: int | str, record: Mapping, key: str, kind: str = "column"):
    if key not in record:
        raise DataError(f"{where(path, line)}: missing {kind} {key!r}; found {kind}s {quoted(record)}")
    return record[key]


def get_text(path: str | Path, line: int | str, record: Mapping, key: str, kind: str = "column") -> str:
    value = get_field(path, line, record, key, kind)
    if not isinstance(value, str):
        raise DataError(f"{where(path, line)}: {kind} {key!r} holds {value!r}; expected a string")
    value = value.strip()
    if not value:
        raise DataError(f"{where(path, line)}: {kind} {key!r} is empty; expected some text")
    return value


def parse_class(path: str | Path, line: int | str, raw, label_map: Mapping[str, int] | None,
                num_labels: int | None = None, key: str = "label") -> int:
    """A class index from a raw label: through ``label_map`` when given, else a non-negative int."""
    if label_map is not None:
        name = raw.strip() if isinstance(raw, str) else (str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None)
        if name not in label_map:
            raise DataError(f"{where(path, line)}: label {raw!r} in {key!r} is not allowed; "
                            f"allowed labels: {quoted(label_map)}")
        value = label_map[name]
    else:
        value = _as_int(raw)
        if value is None or value < 0:
            raise DataError(f"{where(path, line)}: label {raw!r} in {key!r} is not a class index; "
                            "expected an integer 0, 1, ... (or pass label_map)")
    if num_labels is not None and not 0 <= value < num_labels:
        allowed = quoted(label_map) if label_map is not None else ", ".join(map(str, range(num_labels)))
        raise DataError(f"{where(path, line)}: label {raw!r} in {key!r} is outside the task's "
                        f"{num_labels} classes; allowed labels: {allowed}")
    return value


def _as_int(raw) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return int(raw.strip())
    return None


def parse_score(path: str | Path, line: int | str, raw, key: str = "score",
                low: float | None = None, high: float | None = None) -> float:
    """A finite float (a regression target), optionally within [low, high]."""
    span = f" from {low:g} to {high:g}" if low is not None and high is not None else ""
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where(path, line)}: {key} {raw!r} is not a number; expected a float{span}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise DataError(f"{where(path, line)}: {key} {raw!r} is out of range; expected a float{span}")
    return value
